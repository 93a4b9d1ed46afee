-- The storm's application: what the marketplace does to the database (marketplace.py).

-- name: world_me_files :many
-- Every MeFile.
SELECT id FROM me_files ORDER BY id

-- name: world_grouped_traits :many
-- The child traits some trait group uses (changes to them matter).
SELECT DISTINCT trait_id FROM trait_group_traits

-- name: world_child_traits :many
-- Every child trait (an answer).
SELECT id FROM traits WHERE parent_trait_id IS NOT NULL

-- name: world_targets :many
-- Every target.
SELECT id FROM targets ORDER BY id

-- name: world_campaigns :many
-- Every campaign.
SELECT id FROM campaigns ORDER BY id

-- name: world_bands :many
-- Every band, with its target.
SELECT id, target_id FROM target_bands ORDER BY id

-- name: world_band_groups :many
-- The trait groups the bands use, each with every child of its parent trait (its candidates).
SELECT g.id, array_agg(t.id ORDER BY t.id) AS children FROM trait_groups g
JOIN traits t ON t.parent_trait_id = g.parent_trait_id
WHERE g.id IN (SELECT trait_group_id FROM target_band_trait_groups)
GROUP BY g.id ORDER BY g.id

-- name: world_parent_traits :many
-- The parent traits (questions) of the trait groups.
SELECT DISTINCT g.parent_trait_id FROM trait_groups g ORDER BY 1

-- name: hold_me_file_for_tag_changes :exec
-- The application holds the MeFile whose tags it changes, as one updating that row would
-- (FOR NO KEY UPDATE: the jobs' FOR KEY SHARE locks are not in its way). Two changes of one
-- MeFile's tags made in different orders otherwise deadlock each other: seen once in the
-- bench's tiny storm, update_tag_value against delete_tag, both the application's.
SELECT id FROM me_files WHERE id = %(me_file_id)s FOR NO KEY UPDATE

-- name: tags_of_me_file :many
-- The traits a MeFile is tagged with.
SELECT trait_id FROM me_file_tags WHERE me_file_id = %(me_file_id)s

-- name: upsert_tag :exec
-- A MeFile answers (or answers again, with another value).
INSERT INTO me_file_tags (me_file_id, trait_id, tag_value)
VALUES (%(me_file_id)s, %(trait_id)s, %(tag_value)s) ON CONFLICT (me_file_id, trait_id)
DO UPDATE SET tag_value = EXCLUDED.tag_value, updated_at = now()

-- name: delete_tag :exec
-- A MeFile drops an answer.
DELETE FROM me_file_tags WHERE me_file_id = %(me_file_id)s AND trait_id = %(trait_id)s

-- name: update_tag_value :exec
-- A MeFile changes what it typed for an answer.
UPDATE me_file_tags SET tag_value = %(tag_value)s, updated_at = now()
WHERE me_file_id = %(me_file_id)s AND trait_id = %(trait_id)s

-- name: delete_me_file :count
-- A MeFile leaves, unless it has ad events (history keeps it).
DELETE FROM me_files m WHERE m.id = %(me_file_id)s
AND NOT EXISTS (SELECT 1 FROM ad_events e WHERE e.me_file_id = m.id)

-- name: traits_of_group :many
-- The traits of a trait group.
SELECT trait_id FROM trait_group_traits WHERE trait_group_id = %(group_id)s

-- name: add_trait_to_group :exec
-- A marketer adds an answer to a trait group.
INSERT INTO trait_group_traits (trait_group_id, trait_id) VALUES (%(group_id)s, %(trait_id)s)
ON CONFLICT DO NOTHING

-- name: remove_trait_from_group :exec
-- A marketer removes an answer from a trait group.
DELETE FROM trait_group_traits WHERE trait_group_id = %(group_id)s AND trait_id = %(trait_id)s

-- name: rename_trait :exec
-- An editor renames and reorders a trait.
UPDATE traits SET trait_name = %(trait_name)s, display_order = %(display_order)s
WHERE id = %(trait_id)s

-- name: bids_of_campaign :many
-- A campaign's bids, with the campaign's target.
SELECT b.id, c.target_id FROM bids b
JOIN campaigns c ON c.id = b.campaign_id WHERE b.campaign_id = %(campaign_id)s

-- name: delete_bid :exec
-- A marketer drops a bid.
DELETE FROM bids WHERE id = %(bid_id)s

-- name: upsert_bid :exec
-- A marketer bids on a band, or changes the offer amount of the bid already there.
INSERT INTO bids (campaign_id, target_band_id, offer_amt, marketer_cost_amt)
VALUES (%(campaign_id)s, %(band_id)s, %(offer_amt)s, %(marketer_cost_amt)s)
ON CONFLICT (campaign_id, target_band_id) DO UPDATE SET offer_amt = EXCLUDED.offer_amt

-- name: change_bid_amounts :count
-- A marketer changes the amounts of one of a campaign's bids, picked at random.
UPDATE bids SET offer_amt = %(offer_amt)s, marketer_cost_amt = %(marketer_cost_amt)s
WHERE id = (SELECT id FROM bids WHERE campaign_id = %(campaign_id)s ORDER BY random() LIMIT 1)

-- name: toggle_campaign :exec
-- A campaign deactivated, or brought back.
UPDATE campaigns SET deactivated_at = CASE WHEN deactivated_at IS NULL THEN now() END
WHERE id = %(campaign_id)s

-- name: move_campaign :exec
-- A campaign moved to another target.
UPDATE campaigns SET target_id = %(target_id)s WHERE id = %(campaign_id)s

-- name: drop_bids_off_target :exec
-- A moved campaign's bids on bands of other targets dropped.
DELETE FROM bids b USING target_bands tb WHERE b.campaign_id = %(campaign_id)s
AND tb.id = b.target_band_id AND tb.target_id <> %(target_id)s

-- name: add_bid :exec
-- A moved campaign bids on one of its new target's bands (unless it already does).
INSERT INTO bids (campaign_id, target_band_id, offer_amt, marketer_cost_amt)
VALUES (%(campaign_id)s, %(band_id)s, %(offer_amt)s, %(marketer_cost_amt)s)
ON CONFLICT DO NOTHING

-- name: random_offer :one
-- An offer picked at random (the first at or after a random id).
SELECT id FROM offers WHERE id >= (SELECT min(id) + floor(random() *
(max(id) - min(id) + 1)) FROM offers) ORDER BY id LIMIT 1
