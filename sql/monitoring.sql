-- The operators' views, queried by `qlarius-jobs status` and usable from psql as they are
-- (`SELECT * FROM qlarius_job_counts;`). `qlarius-jobs migrate` re-applies this file each
-- time, so it is the one place these queries live.

-- Jobs by queue and state.
CREATE OR REPLACE VIEW qlarius_job_counts AS
SELECT queue_name, status::text AS status, count(*) AS jobs,
       min(scheduled_at) FILTER (WHERE status = 'todo') AS earliest_scheduled
FROM procrastinate_jobs
GROUP BY queue_name, status
ORDER BY queue_name, status;

-- Running jobs whose worker stopped sending heartbeats (killed, lost): rescue candidates.
-- The threshold is the session setting qlarius.stalled_after_seconds, else 45 s.
CREATE OR REPLACE VIEW qlarius_stalled_jobs AS
SELECT j.id AS job_id, j.task_name, j.queue_name, j.args, j.attempts, j.worker_id,
       w.last_heartbeat,
       (SELECT max(e.at) FROM procrastinate_events e
        WHERE e.job_id = j.id AND e.type = 'started') AS started_at
FROM procrastinate_jobs j
LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
WHERE j.status = 'doing'
  AND (w.id IS NULL
       OR w.last_heartbeat < now() - make_interval(secs => COALESCE(
              NULLIF(current_setting('qlarius.stalled_after_seconds', true), '')::float8, 45)));

-- The seed note's health check.
CREATE OR REPLACE VIEW qlarius_null_snapshot_counts AS
SELECT
    (SELECT count(*) FROM target_populations WHERE matching_tags_snapshot IS NULL) AS target_populations,
    (SELECT count(*) FROM offers WHERE matching_tags_snapshot IS NULL) AS offers,
    (SELECT count(*) FROM ad_events WHERE matching_tags_snapshot IS NULL) AS ad_events;

-- Every failed attempt, newest first, with its job.
CREATE OR REPLACE VIEW qlarius_recent_job_errors AS
SELECT e.at, e.job_id, e.task_name, e.attempt, e.error_type, e.message, j.status::text AS job_status,
       j.args, e.traceback
FROM qlarius_job_errors e
JOIN procrastinate_jobs j ON j.id = e.job_id
ORDER BY e.at DESC, e.id DESC;

-- Jobs with their error history as one array, as Oban keeps it on the job.
CREATE OR REPLACE VIEW qlarius_jobs_with_errors AS
SELECT j.id, j.queue_name, j.task_name, j.status::text AS status, j.args, j.attempts,
       COALESCE((SELECT jsonb_agg(jsonb_build_object(
                    'attempt', e.attempt, 'at', e.at, 'error_type', e.error_type,
                    'message', e.message, 'traceback', e.traceback) ORDER BY e.attempt, e.id)
                 FROM qlarius_job_errors e WHERE e.job_id = j.id), '[]'::jsonb) AS errors
FROM procrastinate_jobs j;

-- The seed note's "recent backfill jobs" query, on Procrastinate's tables.
CREATE OR REPLACE VIEW qlarius_recent_backfill_jobs AS
SELECT j.id, j.status::text AS state,
       min(ev.at) FILTER (WHERE ev.type = 'started') AS attempted_at,
       max(ev.at) FILTER (WHERE ev.type IN ('succeeded', 'failed', 'aborted')) AS completed_at,
       (SELECT count(*) FROM qlarius_job_errors e WHERE e.job_id = j.id) AS errors
FROM procrastinate_jobs j
JOIN procrastinate_events ev ON ev.job_id = j.id
WHERE j.task_name = 'backfill_missing_snapshots'
GROUP BY j.id
HAVING max(ev.at) > now() - interval '24 hours'
ORDER BY attempted_at DESC NULLS FIRST;

-- What each backfill run found and really fixed (the note expects 0-10 found an hour).
CREATE OR REPLACE VIEW qlarius_backfill_history AS
SELECT id, job_id, started_at, finished_at, found_populations, found_offers, found_ad_events,
       updated_populations, updated_offers, updated_ad_events, orphan_offers, orphan_ad_events,
       batches, budget_exhausted, elapsed_ms
FROM backfill_runs
ORDER BY started_at DESC;

-- Procrastinate's periodic deferrer no longer runs (schedules live in qlarius_schedules).
DROP VIEW IF EXISTS qlarius_periodic_last_defers;

-- Each schedule with its last tick and that tick's job.
CREATE OR REPLACE VIEW qlarius_schedule_last_ticks AS
SELECT s.task_name, s.cron, s.enabled, s.last_tick_at, s.updated_at, s.updated_by,
       t.tick_at AS last_deferred_at, t.run_now, t.missed, t.job_id AS last_job_id,
       j.status::text AS last_job_status
FROM qlarius_schedules s
LEFT JOIN LATERAL (
    SELECT k.tick_at, k.run_now, k.missed, k.job_id FROM qlarius_schedule_ticks k
    WHERE k.task_name = s.task_name ORDER BY k.tick_at DESC LIMIT 1
) t ON true
LEFT JOIN procrastinate_jobs j ON j.id = t.job_id;

-- What is paused: queues and tasks whose jobs no worker of ours starts now.
CREATE OR REPLACE VIEW qlarius_paused AS
SELECT 'queue' AS kind, queue_name AS name, updated_at AS since, updated_by AS by
FROM qlarius_queue_controls WHERE paused
UNION ALL
SELECT 'task', task_name, updated_at, updated_by FROM qlarius_task_controls WHERE paused
UNION ALL
SELECT 'schedule', task_name, updated_at, updated_by FROM qlarius_schedules WHERE NOT enabled;

-- Pending level-triggered work (see README "Concurrency"): how much, and how old the oldest.
-- sync, reconcile: MeFiles, for the drains; target: targets whose criteria changed, for a
-- populate; campaign: campaigns whose inputs changed, for their offers job.
CREATE OR REPLACE VIEW qlarius_pending_work AS
SELECT 'sync' AS kind, count(*) AS pending,
       count(*) FILTER (WHERE target_id IS NOT NULL) AS waiting_for_a_target,
       round(extract(epoch FROM clock_timestamp() - min(recorded_at))::numeric, 1) AS oldest_s
FROM qlarius_pending_syncs
UNION ALL
SELECT 'reconcile', count(*), count(*) FILTER (WHERE target_id IS NOT NULL),
       round(extract(epoch FROM clock_timestamp() - min(recorded_at))::numeric, 1)
FROM qlarius_pending_reconciles
UNION ALL
SELECT 'target', count(*), 0,
       round(extract(epoch FROM clock_timestamp() - min(recorded_at))::numeric, 1)
FROM (SELECT recorded_at FROM qlarius_pending_targets
      UNION ALL  -- criteria changes the sweep has not yet resolved into targets
      SELECT recorded_at FROM qlarius_pending_criteria) t
UNION ALL
SELECT 'campaign', count(*), 0,
       round(extract(epoch FROM clock_timestamp() - min(recorded_at))::numeric, 1)
FROM qlarius_pending_campaigns;

-- How long changes waited to be applied (cumulative histogram, Prometheus' shape).
CREATE OR REPLACE VIEW qlarius_change_lag_buckets AS
SELECT kind, CASE WHEN le_ms = 9223372036854775807 THEN '+Inf' ELSE le_ms::text END AS le_ms,
       changes
FROM qlarius_change_lag
ORDER BY kind, qlarius_change_lag.le_ms;
