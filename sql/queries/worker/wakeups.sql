-- Wake-ups for pending scopes (wakeups.py): targets whose criteria changed, campaigns whose
-- inputs changed. Their jobs consume the rows; these statements only make sure a job waits.

-- name: scope_sweep_lock :exec
-- One sweep of pending scopes at a time (several worker processes sweep every few seconds),
-- for the caller's transaction: two sweeps never defer the same populate twice.
SELECT pg_advisory_xact_lock(7361201, 13)

-- name: ensure_scope_jobs :one
-- For every target with pending rows that a populate should handle (populated or being
-- populated, or set aside by a populate that could not run), a waiting populate_target unless
-- one is due; for every campaign with pending rows, a waiting create_initial_pending_offers
-- (at most one due per campaign: its queueing lock). Rows of targets and campaigns that are
-- gone are dropped, and so are the drains' rows left for a target that is gone.
WITH gone_targets AS (
    DELETE FROM qlarius_pending_targets p
    WHERE NOT EXISTS (SELECT 1 FROM targets t WHERE t.id = p.target_id)
    RETURNING 1
),
idle_targets AS (
    -- a target never populated asks nothing: its first populate computes from scratch
    DELETE FROM qlarius_pending_targets p
    USING targets t
    WHERE t.id = p.target_id AND t.population_status = 'not_populated' AND p.retry_after IS NULL
    RETURNING 1
),
gone_campaigns AS (
    DELETE FROM qlarius_pending_campaigns p
    WHERE NOT EXISTS (SELECT 1 FROM campaigns c WHERE c.id = p.campaign_id)
    RETURNING 1
),
gone_syncs AS (
    DELETE FROM qlarius_pending_syncs p
    WHERE p.target_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM targets t WHERE t.id = p.target_id)
    RETURNING 1
),
gone_reconciles AS (
    DELETE FROM qlarius_pending_reconciles p
    WHERE p.target_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM targets t WHERE t.id = p.target_id)
    RETURNING 1
),
populates AS (
    INSERT INTO procrastinate_jobs (queue_name, task_name, args)
    SELECT 'targets', 'populate_target', jsonb_build_object('target_id', t.id)
    FROM targets t
    WHERE EXISTS (
            SELECT 1 FROM qlarius_pending_targets p
            WHERE p.target_id = t.id AND (p.retry_after IS NULL OR p.retry_after <= now())
              AND (t.population_status <> 'not_populated' OR p.retry_after IS NOT NULL))
      AND NOT EXISTS (
            SELECT 1 FROM procrastinate_jobs j
            WHERE j.task_name = 'populate_target' AND j.queue_name = 'targets'
              AND j.status = 'todo' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
              AND qlarius_job_arg_id(j.args, 'target_id') = t.id)
    ORDER BY t.id
    RETURNING id
),
offers AS (
    INSERT INTO procrastinate_jobs (queue_name, task_name, args)
    SELECT 'default', 'create_initial_pending_offers', jsonb_build_object('campaign_id', c.id)
    FROM campaigns c
    WHERE EXISTS (
            SELECT 1 FROM qlarius_pending_campaigns p
            WHERE p.campaign_id = c.id AND (p.retry_after IS NULL OR p.retry_after <= now()))
    ORDER BY c.id
    ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING
    RETURNING id
)
SELECT (SELECT count(*) FROM populates) AS populates,
       (SELECT count(*) FROM offers) AS offers,
       (SELECT count(*) FROM gone_targets) + (SELECT count(*) FROM idle_targets)
         + (SELECT count(*) FROM gone_campaigns)
         + (SELECT count(*) FROM gone_syncs) + (SELECT count(*) FROM gone_reconciles)
         AS dropped

-- name: pending_scopes :one
-- Whether any target or campaign has pending rows that are due (the sweep then ensures jobs).
SELECT EXISTS (SELECT 1 FROM qlarius_pending_targets
               WHERE retry_after IS NULL OR retry_after <= now())
    OR EXISTS (SELECT 1 FROM qlarius_pending_campaigns
               WHERE retry_after IS NULL OR retry_after <= now()) AS pending
