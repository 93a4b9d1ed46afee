-- The independent reference's reads (reference.py): raw tables only, no view or function of
-- this project, so that it checks the jobs' SQL rather than repeating it.

-- name: all_traits :many
-- Every trait, with its name, display order and parent.
SELECT id, trait_name, display_order, parent_trait_id FROM traits

-- name: all_tags :many
-- Every MeFile's tags.
SELECT me_file_id, trait_id, tag_value FROM me_file_tags

-- name: all_me_files :many
-- Every MeFile, with tags or not.
SELECT id FROM me_files

-- name: all_trait_groups :many
-- Every trait group, with traits or not.
SELECT id FROM trait_groups

-- name: all_group_traits :many
-- The traits of every trait group.
SELECT trait_group_id, trait_id FROM trait_group_traits

-- name: all_bands :many
-- Every band and its target.
SELECT id, target_id FROM target_bands

-- name: all_band_groups :many
-- The trait groups of every band.
SELECT target_band_id, trait_group_id FROM target_band_trait_groups

-- name: all_target_statuses :many
-- Every target's population status.
SELECT id, population_status FROM targets

-- name: all_campaigns :many
-- Every campaign, its target and whether it is live (launched, not in the future, active).
SELECT id, target_id,
       launched_at IS NOT NULL AND launched_at <= now() AND deactivated_at IS NULL AS live
FROM campaigns

-- name: first_media_runs :many
-- Each campaign's first media run.
SELECT campaign_id, min(id) AS first_run FROM media_runs GROUP BY 1

-- name: all_bids :many
-- Every bid's amounts.
SELECT campaign_id, target_band_id, offer_amt, marketer_cost_amt FROM bids

-- name: all_populations :many
-- Every population row, with its snapshot.
SELECT target_band_id, me_file_id, matching_tags_snapshot FROM target_populations

-- name: all_offers :many
-- Every offer, and whether an ad event completed it.
SELECT o.campaign_id, o.me_file_id, o.media_run_id, o.target_band_id,
       o.matching_tags_snapshot, o.offer_amt, o.marketer_cost_amt,
       EXISTS (SELECT 1 FROM ad_events e WHERE e.offer_id = o.id AND e.is_offer_complete)
           AS completed
FROM offers o

-- name: null_snapshot_copies :many
-- The rows of {table} (offers or ad_events) with a NULL snapshot that a population explains.
SELECT c.id, c.me_file_id FROM {table} c JOIN target_populations tp
ON tp.me_file_id = c.me_file_id AND tp.target_band_id = c.target_band_id
WHERE c.matching_tags_snapshot IS NULL
