-- The offers jobs (offers.py).

-- name: lock_campaign_row :one
-- The offers job keeps its campaign from being deleted while it runs, taken first.
SELECT id FROM campaigns WHERE id = %(campaign_id)s FOR KEY SHARE

-- name: campaign_for_offers :one
-- The campaign and its target's status. No lock: the job then takes the target's offers scope
-- (a row only jobs lock), never the targets row the application updates.
SELECT c.id, c.target_id, c.launched_at, c.deactivated_at, t.population_status,
       t.status_before_populating,
       c.launched_at > now() AS launches_later,
       extract(epoch FROM c.launched_at - now()) AS seconds_to_launch
FROM campaigns c
JOIN targets t ON t.id = c.target_id
WHERE c.id = %(campaign_id)s

-- name: lock_ineligible_offers :many
-- The offers (of the given MeFiles, or of one campaign, in free targets) that no longer match
-- an eligible (campaign, band, first media run), each locked for deletion in id order without
-- waiting: one locked elsewhere (the application recording an ad event on it) is returned
-- with locked = false, and its MeFile left for a later batch. Only offers to delete are
-- locked: the others stay free for the application (a refresh takes a weaker lock).
WITH ineligible AS MATERIALIZED (
    SELECT o.id, o.me_file_id
    FROM offers o
    JOIN campaigns c ON c.id = o.campaign_id
    WHERE c.target_id = ANY(%(free_targets)s::bigint[])
      AND (%(me_file_ids)s::bigint[] IS NULL OR o.me_file_id = ANY(%(me_file_ids)s::bigint[]))
      AND (%(campaign_id)s::bigint IS NULL OR o.campaign_id = %(campaign_id)s::bigint)
      AND NOT EXISTS (
          SELECT 1 FROM qlarius_eligible_offers e
          WHERE e.me_file_id = o.me_file_id AND e.campaign_id = o.campaign_id
            AND e.target_band_id = o.target_band_id AND e.media_run_id = o.media_run_id)
),
locked AS MATERIALIZED (
    SELECT o.id FROM offers o
    WHERE o.id IN (SELECT id FROM ineligible)
    ORDER BY o.id
    FOR UPDATE SKIP LOCKED
)
SELECT i.id, i.me_file_id, EXISTS (SELECT 1 FROM locked l WHERE l.id = i.id) AS locked
FROM ineligible i
ORDER BY i.id

-- name: delete_ineligible_offers :count
-- Delete the offers lock_ineligible_offers locked (one statement, any number of rows).
DELETE FROM offers WHERE id = ANY(%(offer_ids)s::bigint[])

-- name: eligible_populations_missing_snapshot :many
-- Populations behind eligible offers (of the given MeFiles or one campaign, in free targets)
-- whose snapshot is NULL: legacy rows, filled before their offers are written.
SELECT DISTINCT population_id AS id, me_file_id
FROM qlarius_eligible_offers
WHERE matching_tags_snapshot IS NULL
  AND target_id = ANY(%(free_targets)s::bigint[])
  AND (%(me_file_ids)s::bigint[] IS NULL OR me_file_id = ANY(%(me_file_ids)s::bigint[]))
  AND (%(campaign_id)s::bigint IS NULL OR campaign_id = %(campaign_id)s::bigint)
  AND me_file_id <> ALL(%(blocked)s::bigint[])

-- name: upsert_eligible_offers :many
-- Create the missing eligible offers (of the given MeFiles or one campaign, in free targets),
-- each copying its population's snapshot, and bring the snapshot of existing ones in line
-- with their population's. Runs after delete_ineligible_offers in the same transaction, so a
-- MeFile that moved band gets its new offer. Returns one row per offer created or refreshed.
INSERT INTO offers (campaign_id, me_file_id, media_run_id, target_band_id, offer_amt,
                    marketer_cost_amt, pending_until, is_current, matching_tags_snapshot)
SELECT DISTINCT ON (e.campaign_id, e.me_file_id, e.media_run_id)
       e.campaign_id, e.me_file_id, e.media_run_id, e.target_band_id, e.offer_amt,
       e.marketer_cost_amt, now() + make_interval(secs => %(pending_seconds)s), true,
       e.matching_tags_snapshot
FROM qlarius_eligible_offers e
WHERE e.target_id = ANY(%(free_targets)s::bigint[])
  AND (%(me_file_ids)s::bigint[] IS NULL OR e.me_file_id = ANY(%(me_file_ids)s::bigint[]))
  AND (%(campaign_id)s::bigint IS NULL OR e.campaign_id = %(campaign_id)s::bigint)
  AND e.me_file_id <> ALL(%(blocked)s::bigint[])
  AND e.matching_tags_snapshot IS NOT NULL
ORDER BY e.campaign_id, e.me_file_id, e.media_run_id, e.target_band_id
ON CONFLICT (campaign_id, me_file_id, media_run_id) DO UPDATE
SET matching_tags_snapshot = EXCLUDED.matching_tags_snapshot, updated_at = now()
WHERE offers.target_band_id = EXCLUDED.target_band_id
  AND offers.matching_tags_snapshot IS DISTINCT FROM EXCLUDED.matching_tags_snapshot
RETURNING (xmax = 0) AS created

-- name: offer_wait_since :one
-- When this campaign's offers started waiting for its target (now, the first time).
WITH started AS (
    INSERT INTO qlarius_offer_waits (campaign_id) VALUES (%(campaign_id)s)
    ON CONFLICT (campaign_id) DO NOTHING
    RETURNING since
)
SELECT since FROM started
UNION ALL
SELECT since FROM qlarius_offer_waits WHERE campaign_id = %(campaign_id)s
LIMIT 1

-- name: end_offer_wait :exec
DELETE FROM qlarius_offer_waits WHERE campaign_id = %(campaign_id)s
