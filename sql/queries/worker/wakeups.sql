-- Wake-ups for pending scopes (wakeups.py): targets whose criteria changed, campaigns whose
-- inputs changed. Their jobs consume the rows; these statements only make sure a job waits.

-- name: scope_sweep_lock :exec
-- One sweep of pending scopes at a time (several worker processes sweep every few seconds),
-- for the caller's transaction: two sweeps never defer the same populate twice.
SELECT pg_advisory_xact_lock(7361201, 13)

-- name: resolve_pending_criteria :one
-- Criteria and trait changes, recorded by key in the application's transaction, resolved into
-- the targets (and, for a band, the campaigns bidding on it) they concern now that they have
-- committed: resolving inside the application's transaction missed a change committed beside
-- it (see migration 0014). Run before ensure_scope_jobs, in the sweep's transaction.
WITH taken AS (
    DELETE FROM qlarius_pending_criteria
    RETURNING trait_group_id, target_band_id, trait_id, recorded_at
),
groups AS (
    SELECT trait_group_id AS id, recorded_at FROM taken WHERE trait_group_id IS NOT NULL
    UNION ALL
    -- a trait's name and order are in its own entries and, for a parent, in its children's
    SELECT tgt.trait_group_id, c.recorded_at
    FROM taken c
    JOIN traits t ON t.id = c.trait_id OR t.parent_trait_id = c.trait_id
    JOIN trait_group_traits tgt ON tgt.trait_id = t.id
),
bands AS (
    SELECT target_band_id AS id, recorded_at FROM taken WHERE target_band_id IS NOT NULL
    UNION ALL
    SELECT g.target_band_id, groups.recorded_at
    FROM groups JOIN target_band_trait_groups g ON g.trait_group_id = groups.id
),
targets AS (
    INSERT INTO qlarius_pending_targets (target_id, recorded_at)
    SELECT b.target_id, min(bands.recorded_at)
    FROM bands JOIN target_bands b ON b.id = bands.id
    GROUP BY b.target_id
    RETURNING 1
),
campaigns AS (
    INSERT INTO qlarius_pending_campaigns (campaign_id, recorded_at)
    SELECT bids.campaign_id, min(taken.recorded_at)
    FROM taken JOIN bids ON bids.target_band_id = taken.target_band_id
    GROUP BY bids.campaign_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM taken) AS criteria,
       (SELECT count(*) FROM targets) AS targets,
       (SELECT count(*) FROM campaigns) AS campaigns

-- name: ensure_scope_jobs :one
-- For every target with pending rows that a populate should handle (populated or being
-- populated, or set aside by a populate that could not run), a waiting populate_target unless
-- one is due (campaigns: ensure_offers_jobs, next). Rows of targets and campaigns that are
-- gone are dropped (the drains' rows left for a target that is gone: by the drains).
WITH gone_targets AS (
    DELETE FROM qlarius_pending_targets p
    WHERE NOT EXISTS (SELECT 1 FROM targets t WHERE t.id = p.target_id)
    RETURNING 1
),
idle_targets AS (
    -- a target never populated asks nothing: its first populate computes from scratch; unless
    -- one is running or waiting now (deferred by hand: the status changes when it commits),
    -- which may have read before the change: its rows stay, for a populate after it
    DELETE FROM qlarius_pending_targets p
    USING targets t
    WHERE t.id = p.target_id AND t.population_status = 'not_populated' AND p.retry_after IS NULL
      AND NOT qlarius_populate_alive(t.id)
    RETURNING 1
),
stranded AS (
    -- a target left 'populating' with no populate alive and none pending (its last one ended
    -- while the application held the row, so the job's end could not restore it): restored
    -- here, never waiting for a row the application holds
    UPDATE targets t
    SET population_status = t.status_before_populating,
        status_before_populating = NULL, updated_at = now()
    WHERE t.id IN (
        SELECT s.id FROM targets s
        WHERE s.population_status = 'populating' AND s.status_before_populating IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM qlarius_pending_targets p WHERE p.target_id = s.id)
          AND NOT qlarius_populate_alive(s.id)
        ORDER BY s.id
        FOR NO KEY UPDATE SKIP LOCKED)
    RETURNING 1
),
gone_campaigns AS (
    DELETE FROM qlarius_pending_campaigns p
    WHERE NOT EXISTS (SELECT 1 FROM campaigns c WHERE c.id = p.campaign_id)
    RETURNING 1
),
unknown_before AS (
    -- left 'populating' with nothing to restore (a crash of the system this replaces, a hand
    -- edit): populated again, from scratch; next sweep, a populate for this pending row
    INSERT INTO qlarius_pending_targets (target_id)
    SELECT s.id FROM targets s
    WHERE s.population_status = 'populating' AND s.status_before_populating IS NULL
      AND NOT EXISTS (SELECT 1 FROM qlarius_pending_targets p WHERE p.target_id = s.id)
      AND NOT qlarius_populate_alive(s.id)
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
)
SELECT (SELECT count(*) FROM populates) AS populates,
       (SELECT count(*) FROM stranded) + (SELECT count(*) FROM unknown_before) AS restored,
       (SELECT count(*) FROM gone_targets) + (SELECT count(*) FROM idle_targets)
         + (SELECT count(*) FROM gone_campaigns)
         AS dropped

-- name: ensure_offers_jobs :one
-- For every campaign with pending rows, a waiting create_initial_pending_offers (at most one
-- due per campaign: its queueing lock, the same as the application's offer_campaign). Each
-- campaign on its own, waiting at most 50 ms for a job the application is inserting right now
-- (see qlarius_defer_pending_offers_jobs, migration 0014): skipped until the next sweep.
SELECT deferred AS offers, skipped FROM qlarius_defer_pending_offers_jobs('50ms')

-- name: pending_scopes :one
-- Whether any target or campaign has pending rows that are due (the sweep then ensures jobs).
SELECT EXISTS (SELECT 1 FROM qlarius_pending_criteria)
    OR EXISTS (SELECT 1 FROM qlarius_pending_targets
               WHERE retry_after IS NULL OR retry_after <= now())
    OR EXISTS (SELECT 1 FROM qlarius_pending_campaigns
               WHERE retry_after IS NULL OR retry_after <= now())
    OR EXISTS (SELECT 1 FROM targets s  -- stranded 'populating' (see ensure_scope_jobs)
               WHERE s.population_status = 'populating'
                 AND NOT EXISTS (SELECT 1 FROM qlarius_pending_targets p WHERE p.target_id = s.id)
                 AND NOT qlarius_populate_alive(s.id)) AS pending
