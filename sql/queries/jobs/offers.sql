-- The offers jobs (offers.py).

-- name: lock_campaign_row :one
-- The offers job keeps its campaign from being deleted while it runs, taken first. SKIP
-- LOCKED: a campaign being deleted right now is not waited for (no row: busy, or gone).
SELECT id FROM campaigns WHERE id = %(campaign_id)s FOR KEY SHARE SKIP LOCKED

-- name: take_pending_campaign :count
-- The pending rows of this campaign, consumed by the job that is about to read it (in the
-- same transaction, before it reads: a change committed later leaves its row).
DELETE FROM qlarius_pending_campaigns WHERE campaign_id = %(campaign_id)s

-- name: leave_pending_campaign :exec
-- The campaign could not be handled now (a row held elsewhere): its pending rows (or a new
-- one) are due again after retry_seconds, when the workers' sweep defers its job.
WITH later AS (
    UPDATE qlarius_pending_campaigns
    SET retry_after = now() + make_interval(secs => %(retry_seconds)s)
    WHERE campaign_id = %(campaign_id)s
    RETURNING 1
)
INSERT INTO qlarius_pending_campaigns (campaign_id, retry_after)
SELECT %(campaign_id)s, now() + make_interval(secs => %(retry_seconds)s)
WHERE NOT EXISTS (SELECT 1 FROM later)

-- name: campaign_for_offers :one
-- The campaign and its target's status. No lock: the job then takes the target's offers scope
-- (a row only jobs lock), never the targets row the application updates.
SELECT c.id, c.target_id, c.launched_at, c.deactivated_at, t.population_status,
       t.status_before_populating,
       c.launched_at IS NOT NULL AND c.launched_at <= now() AND c.deactivated_at IS NULL AS live,
       c.launched_at > now() AS launches_later,
       extract(epoch FROM c.launched_at - now()) AS seconds_to_launch
FROM campaigns c
JOIN targets t ON t.id = c.target_id
WHERE c.id = %(campaign_id)s

-- name: lock_ineligible_offers :one
-- The offers (of the given MeFiles, or of one campaign, in free targets) that no longer match
-- an eligible (campaign, band, first media run), each locked for deletion in id order without
-- waiting (locked_ids): the MeFile of one locked elsewhere (the application recording an ad
-- event on it) is returned in blocked, left for a later batch. Only offers to delete are
-- locked: the others stay free for the application (a refresh takes a weaker lock). A campaign
-- that is not live (deactivated) keeps the offers already completed (an ad event with
-- is_offer_complete): they are history; the others are withdrawn.
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
      AND NOT (
          (c.launched_at IS NULL OR c.launched_at > now() OR c.deactivated_at IS NOT NULL)
          AND EXISTS (SELECT 1 FROM ad_events ae
                      WHERE ae.offer_id = o.id AND ae.is_offer_complete))
),
locked AS MATERIALIZED (
    SELECT o.id, o.me_file_id FROM offers o
    WHERE o.id IN (SELECT id FROM ineligible)
    ORDER BY o.id
    FOR UPDATE SKIP LOCKED
)
-- the ones held elsewhere are a difference of sets, EXCEPT (a hash, or a sort when large): a
-- NOT IN over a CTE is hashed only while the planner expects it to fit in hash_mem, and a
-- rescan of the CTE per row beyond that (quadratic), as a correlated EXISTS over it can be
SELECT ARRAY(SELECT id FROM locked ORDER BY id) AS locked_ids,
       ARRAY(SELECT DISTINCT me_file_id
             FROM (SELECT id, me_file_id FROM ineligible
                   EXCEPT SELECT id, me_file_id FROM locked) unlocked
             ORDER BY 1) AS blocked

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

-- name: insert_missing_offers :one
-- Create the missing eligible offers (of the given MeFiles or one campaign, in free targets),
-- each copying its population's snapshot and its bid's amounts. Runs after
-- delete_ineligible_offers in the same transaction, so a MeFile that moved band gets its new
-- offer. A conflicting insert does nothing (it locks nothing); a MeFile being deleted right
-- now is not waited for (FOR KEY SHARE SKIP LOCKED) but returned in skipped, for later.
WITH candidates AS MATERIALIZED (
    SELECT DISTINCT ON (e.campaign_id, e.me_file_id, e.media_run_id)
           e.campaign_id, e.me_file_id, e.media_run_id, e.target_band_id, e.offer_amt,
           e.marketer_cost_amt, e.matching_tags_snapshot
    FROM qlarius_eligible_offers e
    WHERE e.target_id = ANY(%(free_targets)s::bigint[])
      AND (%(me_file_ids)s::bigint[] IS NULL OR e.me_file_id = ANY(%(me_file_ids)s::bigint[]))
      AND (%(campaign_id)s::bigint IS NULL OR e.campaign_id = %(campaign_id)s::bigint)
      AND e.me_file_id <> ALL(%(blocked)s::bigint[])
      AND e.matching_tags_snapshot IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM offers o
                      WHERE o.campaign_id = e.campaign_id AND o.me_file_id = e.me_file_id
                        AND o.media_run_id = e.media_run_id)
    ORDER BY e.campaign_id, e.me_file_id, e.media_run_id, e.target_band_id
),
live AS MATERIALIZED (
    -- the candidates travel with their MeFile's lock: joining candidates back to this CTE was
    -- planned, once the statistics said every offer existed, as a nested loop over two CTE
    -- scans (quadratic: a target's pass creating ~700k offers at 2M MeFiles ran for 25+ min)
    SELECT c.* FROM candidates c
    JOIN me_files m ON m.id = c.me_file_id
    ORDER BY m.id
    FOR KEY SHARE OF m SKIP LOCKED
),
inserted AS (
    INSERT INTO offers (campaign_id, me_file_id, media_run_id, target_band_id, offer_amt,
                        marketer_cost_amt, pending_until, is_current, matching_tags_snapshot)
    SELECT l.campaign_id, l.me_file_id, l.media_run_id, l.target_band_id, l.offer_amt,
           l.marketer_cost_amt, now() + make_interval(secs => %(pending_seconds)s), true,
           l.matching_tags_snapshot
    FROM live l
    ON CONFLICT (campaign_id, me_file_id, media_run_id) DO NOTHING
    RETURNING me_file_id
)
SELECT (SELECT count(*) FROM inserted) AS created,
       ARRAY(SELECT me_file_id FROM candidates
             EXCEPT SELECT me_file_id FROM live ORDER BY 1) AS skipped

-- name: refresh_stale_offers :one
-- Bring existing eligible offers (of the given MeFiles or one campaign, in free targets) in
-- line: their population's snapshot, and, while not completed (no ad event with
-- is_offer_complete), their bid's current amounts; a completed offer keeps the amounts it was
-- completed with. Only the offers that differ are locked, FOR NO KEY UPDATE SKIP LOCKED (an ad
-- event being recorded on one takes a key-share lock, which does not conflict): one held
-- elsewhere is not waited for, its MeFile returned in skipped.
WITH stale AS MATERIALIZED (
    SELECT o.id, o.me_file_id, e.matching_tags_snapshot AS snapshot, done.completed,
           CASE WHEN done.completed THEN o.offer_amt ELSE e.offer_amt END AS offer_amt,
           CASE WHEN done.completed THEN o.marketer_cost_amt ELSE e.marketer_cost_amt END
               AS marketer_cost_amt
    FROM offers o
    JOIN qlarius_eligible_offers e
      ON e.campaign_id = o.campaign_id AND e.me_file_id = o.me_file_id
     AND e.media_run_id = o.media_run_id AND e.target_band_id = o.target_band_id
    CROSS JOIN LATERAL (
        SELECT EXISTS (SELECT 1 FROM ad_events ae
                       WHERE ae.offer_id = o.id AND ae.is_offer_complete) AS completed
    ) done
    WHERE e.target_id = ANY(%(free_targets)s::bigint[])
      AND (%(me_file_ids)s::bigint[] IS NULL OR o.me_file_id = ANY(%(me_file_ids)s::bigint[]))
      AND (%(campaign_id)s::bigint IS NULL OR o.campaign_id = %(campaign_id)s::bigint)
      AND o.me_file_id <> ALL(%(blocked)s::bigint[])
      AND e.matching_tags_snapshot IS NOT NULL
      AND (o.matching_tags_snapshot IS DISTINCT FROM e.matching_tags_snapshot
           OR (NOT done.completed
               AND (o.offer_amt, o.marketer_cost_amt)
                   IS DISTINCT FROM (e.offer_amt, e.marketer_cost_amt)))
),
locked AS MATERIALIZED (
    -- the new values travel with the lock: the update joins this alone, by primary key (a
    -- semi-join of two CTEs, estimated at a couple of rows each, was planned as a nested loop,
    -- quadratic: 5 s for the 4,400 offers of one target's pass)
    SELECT o.id, o.me_file_id, s.snapshot, s.offer_amt, s.marketer_cost_amt
    FROM offers o JOIN stale s ON s.id = o.id
    ORDER BY o.id
    FOR NO KEY UPDATE OF o SKIP LOCKED
),
refreshed AS (
    UPDATE offers o
    SET matching_tags_snapshot = l.snapshot, offer_amt = l.offer_amt,
        marketer_cost_amt = l.marketer_cost_amt, updated_at = now()
    FROM locked l
    WHERE o.id = l.id
    RETURNING o.id
)
SELECT (SELECT count(*) FROM refreshed) AS refreshed,
       ARRAY(SELECT DISTINCT me_file_id
             FROM (SELECT id, me_file_id FROM stale
                   EXCEPT SELECT id, me_file_id FROM locked) unlocked
             ORDER BY 1) AS skipped

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
