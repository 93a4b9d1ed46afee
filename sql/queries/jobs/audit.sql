-- The drift audit (audit.py).

-- name: audit_sample :many
-- A random sample of MeFile ids (uniform over the id range, index probes, no sort of the
-- table). The draw refers to the series row, so it is drawn again for each one (an
-- uncorrelated subquery would be evaluated once: one id, size times).
WITH bounds AS (SELECT min(id) AS lo, max(id) AS hi FROM me_files)
SELECT DISTINCT m.id
FROM bounds, generate_series(1, %(size)s * 2) g
CROSS JOIN LATERAL (
    SELECT id FROM me_files
    WHERE id >= bounds.lo + floor(random() * (bounds.hi - bounds.lo + 1)) + 0 * g
    ORDER BY id LIMIT 1
) m
LIMIT %(size)s

-- name: audit_free_targets :many
-- The populated targets an audit may judge now: no scope job holds either of their scopes,
-- and no re-populate is pending (a populate or an offers job in flight is not drift). Share-locked for the audit's transaction,
-- so none starts before the audit's statement has read.
WITH locked AS MATERIALIZED (
    SELECT l.target_id
    FROM qlarius_target_locks l
    WHERE l.target_id IN (SELECT id FROM targets WHERE population_status = 'populated')
      -- criteria changed, its re-populate to come: in flight, not drift
      AND NOT EXISTS (SELECT 1 FROM qlarius_pending_targets p WHERE p.target_id = l.target_id)
      -- criteria changes not yet resolved into targets (the sweep does, every few seconds)
      AND NOT EXISTS (SELECT 1 FROM qlarius_pending_criteria)
    ORDER BY l.target_id, l.scope
    FOR SHARE SKIP LOCKED
)
SELECT target_id FROM locked GROUP BY target_id HAVING count(*) = 2 ORDER BY target_id

-- name: audit_drift :many
-- Drift of the given MeFiles (NULL: all) against a fresh computation, in one snapshot:
--   drifted_population    a population row band matching does not explain, or a missing one
--   stale_snapshot        a population snapshot that is not what the tags give now
--   offer_without_eligibility, eligible_without_offer, stale_offer_snapshot: offers of live
--                         campaigns against the eligible set
--   stale_offer_amount    an offer of a live campaign, not yet completed, without its bid's
--                         current amounts
--   offer_of_a_campaign_not_live  an offer not yet completed of a deactivated (or not yet
--                         launched) campaign
-- Only in the given (free, populated) targets; MeFiles with pending syncs or reconciles, and
-- campaigns with an offers job due or running, are in flight, not drifted.
WITH scope AS MATERIALIZED (
    SELECT id AS me_file_id FROM me_files m
    WHERE (%(me_file_ids)s::bigint[] IS NULL OR m.id = ANY(%(me_file_ids)s::bigint[]))
      AND NOT EXISTS (SELECT 1 FROM qlarius_pending_syncs p WHERE p.me_file_id = m.id)
      AND NOT EXISTS (SELECT 1 FROM qlarius_pending_reconciles p WHERE p.me_file_id = m.id)
),
wanted AS MATERIALIZED (
    SELECT b.target_id, b.me_file_id, b.band_id
    FROM qlarius_band_memberships b
    WHERE b.target_id = ANY(%(target_ids)s::bigint[])
      -- the sample as a plain array too: pushed down into the view, so only the sample's
      -- tags are grouped (the IN below is a semi-join the planner cannot push down: alone,
      -- it had every MeFile's memberships computed, ~0.9 s at 20k MeFiles, growing with them)
      AND (%(me_file_ids)s::bigint[] IS NULL OR b.me_file_id = ANY(%(me_file_ids)s::bigint[]))
      AND b.me_file_id IN (SELECT me_file_id FROM scope)
),
have AS MATERIALIZED (
    SELECT tb.target_id, tp.me_file_id, tp.target_band_id AS band_id, tp.matching_tags_snapshot
    FROM target_populations tp
    JOIN target_bands tb ON tb.id = tp.target_band_id
    WHERE tb.target_id = ANY(%(target_ids)s::bigint[])
      AND tp.me_file_id IN (SELECT me_file_id FROM scope)
),
fresh AS (
    SELECT s.me_file_id, s.band_id, s.snapshot
    FROM (SELECT array_agg(me_file_id) AS m, array_agg(band_id) AS b FROM have
          WHERE matching_tags_snapshot IS NOT NULL) pairs,
         qlarius_matching_tags_snapshots(pairs.m, pairs.b) s
),
quiet_campaigns AS MATERIALIZED (
    SELECT c.id FROM campaigns c
    WHERE c.target_id = ANY(%(target_ids)s::bigint[])
      AND c.deactivated_at IS NULL AND c.launched_at <= now()
      AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j
                      WHERE j.task_name = 'create_initial_pending_offers'
                        AND (j.status = 'doing' OR (j.status = 'todo'
                             AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())))
                        AND qlarius_job_arg_id(j.args, 'campaign_id') = c.id)
      AND NOT EXISTS (SELECT 1 FROM qlarius_pending_campaigns p WHERE p.campaign_id = c.id)
),
eligible AS MATERIALIZED (
    SELECT e.* FROM qlarius_eligible_offers e
    WHERE e.campaign_id IN (SELECT id FROM quiet_campaigns)
      AND e.me_file_id IN (SELECT me_file_id FROM scope)
),
live_offers AS MATERIALIZED (
    SELECT o.*, EXISTS (SELECT 1 FROM ad_events ae
                        WHERE ae.offer_id = o.id AND ae.is_offer_complete) AS completed
    FROM offers o
    WHERE o.campaign_id IN (SELECT id FROM quiet_campaigns)
      AND o.me_file_id IN (SELECT me_file_id FROM scope)
),
idle_campaigns AS MATERIALIZED (
    SELECT c.id FROM campaigns c
    WHERE c.target_id = ANY(%(target_ids)s::bigint[])
      AND (c.deactivated_at IS NOT NULL OR c.launched_at IS NULL OR c.launched_at > now())
      AND NOT EXISTS (SELECT 1 FROM qlarius_pending_campaigns p WHERE p.campaign_id = c.id)
      AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j
                      WHERE j.task_name = 'create_initial_pending_offers'
                        AND (j.status = 'doing' OR (j.status = 'todo'
                             AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())))
                        AND qlarius_job_arg_id(j.args, 'campaign_id') = c.id)
)
SELECT 'drifted_population' AS kind, me_file_id, target_id AS about
FROM ((SELECT target_id, me_file_id, band_id FROM wanted
       EXCEPT SELECT target_id, me_file_id, band_id FROM have)
      UNION
      (SELECT target_id, me_file_id, band_id FROM have
       EXCEPT SELECT target_id, me_file_id, band_id FROM wanted)) d
UNION ALL
SELECT 'stale_snapshot', h.me_file_id, h.band_id
FROM have h JOIN fresh f ON f.me_file_id = h.me_file_id AND f.band_id = h.band_id
WHERE h.matching_tags_snapshot IS DISTINCT FROM f.snapshot
UNION ALL
SELECT 'offer_without_eligibility', o.me_file_id, o.id
FROM live_offers o
WHERE NOT EXISTS (SELECT 1 FROM eligible e
                  WHERE e.campaign_id = o.campaign_id AND e.me_file_id = o.me_file_id
                    AND e.target_band_id = o.target_band_id AND e.media_run_id = o.media_run_id)
UNION ALL
SELECT 'eligible_without_offer', e.me_file_id, e.campaign_id
FROM eligible e
WHERE NOT EXISTS (SELECT 1 FROM offers o
                  WHERE o.campaign_id = e.campaign_id AND o.me_file_id = e.me_file_id
                    AND o.media_run_id = e.media_run_id)
UNION ALL
SELECT 'stale_offer_snapshot', o.me_file_id, o.id
FROM live_offers o
JOIN eligible e ON e.campaign_id = o.campaign_id AND e.me_file_id = o.me_file_id
               AND e.target_band_id = o.target_band_id AND e.media_run_id = o.media_run_id
WHERE o.matching_tags_snapshot IS NOT NULL AND e.matching_tags_snapshot IS NOT NULL
  AND o.matching_tags_snapshot IS DISTINCT FROM e.matching_tags_snapshot
UNION ALL
SELECT 'stale_offer_amount', o.me_file_id, o.id
FROM live_offers o
JOIN eligible e ON e.campaign_id = o.campaign_id AND e.me_file_id = o.me_file_id
               AND e.target_band_id = o.target_band_id AND e.media_run_id = o.media_run_id
WHERE NOT o.completed
  AND (o.offer_amt, o.marketer_cost_amt) IS DISTINCT FROM (e.offer_amt, e.marketer_cost_amt)
UNION ALL
SELECT 'offer_of_a_campaign_not_live', o.me_file_id, o.id
FROM offers o
WHERE o.campaign_id IN (SELECT id FROM idle_campaigns)
  AND o.me_file_id IN (SELECT me_file_id FROM scope)
  AND NOT EXISTS (SELECT 1 FROM ad_events ae WHERE ae.offer_id = o.id AND ae.is_offer_complete)
ORDER BY 1, 2

-- name: stuck_pending :many
-- Pending work a drain could take now (not waiting for a target a job holds, not set aside for
-- a retry) and older than older_than_seconds: the drains are not applying it. One row per
-- kind (0 when none). Columns: kind, rows, oldest_s.
WITH free AS MATERIALIZED (
    SELECT target_id, scope FROM qlarius_target_locks ORDER BY target_id, scope
    FOR SHARE SKIP LOCKED
),
stuck AS (
    SELECT 'sync' AS kind, p.recorded_at FROM qlarius_pending_syncs p
    WHERE p.recorded_at < clock_timestamp() - make_interval(secs => %(older_than_seconds)s)
      AND (p.retry_after IS NULL OR p.retry_after <= now())
      AND (p.target_id IS NULL OR p.target_id IN
           (SELECT target_id FROM free WHERE scope = 'populations'))
    UNION ALL
    SELECT 'reconcile', p.recorded_at FROM qlarius_pending_reconciles p
    WHERE p.recorded_at < clock_timestamp() - make_interval(secs => %(older_than_seconds)s)
      AND (p.retry_after IS NULL OR p.retry_after <= now())
      AND (p.target_id IS NULL OR p.target_id IN
           (SELECT target_id FROM free WHERE scope = 'offers'))
    UNION ALL
    -- a target's populate, or a campaign's offers job, that should have consumed these rows
    -- (a target never populated asks nothing; a job running now is not late)
    SELECT 'target', p.recorded_at FROM qlarius_pending_targets p
    JOIN targets t ON t.id = p.target_id
    WHERE p.recorded_at < clock_timestamp() - make_interval(secs => %(older_than_seconds)s)
      AND (p.retry_after IS NULL OR p.retry_after <= now())
      AND (t.population_status <> 'not_populated' OR p.retry_after IS NOT NULL)
      AND p.target_id IN (SELECT target_id FROM free WHERE scope = 'populations')
    UNION ALL
    SELECT 'target', p.recorded_at FROM qlarius_pending_criteria p  -- no sweep resolved them
    WHERE p.recorded_at < clock_timestamp() - make_interval(secs => %(older_than_seconds)s)
    UNION ALL
    SELECT 'campaign', p.recorded_at FROM qlarius_pending_campaigns p
    JOIN campaigns c ON c.id = p.campaign_id
    WHERE p.recorded_at < clock_timestamp() - make_interval(secs => %(older_than_seconds)s)
      AND (p.retry_after IS NULL OR p.retry_after <= now())
      AND c.target_id IN (SELECT target_id FROM free WHERE scope = 'offers')
)
SELECT k.kind, count(s.recorded_at) AS rows,
       COALESCE(round(extract(epoch FROM clock_timestamp() - min(s.recorded_at))::numeric, 1),
                0) AS oldest_s
FROM (VALUES (1, 'sync'), (2, 'reconcile'), (3, 'target'), (4, 'campaign')) k(n, kind)
LEFT JOIN stuck s ON s.kind = k.kind
GROUP BY k.n, k.kind
ORDER BY k.n
