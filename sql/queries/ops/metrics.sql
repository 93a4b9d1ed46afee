-- What /metrics reads, each scrape (metrics.py): one scrape covers every worker process on
-- every machine, since it all lives in the database. The console's overview reads the first
-- three as well.

-- name: jobs_by_queue_and_state :many
-- An index-only scan of qlarius_jobs_queue_status_idx. Columns: queue, state, jobs.
SELECT queue_name AS queue, status::text AS state, count(*) AS jobs
FROM procrastinate_jobs GROUP BY queue_name, status ORDER BY queue_name, status

-- name: oldest_waiting_jobs :many
-- Per queue, the oldest job that is due and waiting, and how long it has waited.
-- Columns: queue, job_id, waiting_seconds.
SELECT q.queue, w.id AS job_id,
       extract(epoch FROM now() - COALESCE(w.scheduled_at, d.at))::float8 AS waiting_seconds
FROM (SELECT DISTINCT queue_name AS queue FROM procrastinate_jobs WHERE status = 'todo') q
CROSS JOIN LATERAL (
    SELECT id, scheduled_at FROM procrastinate_jobs
    WHERE queue_name = q.queue AND status = 'todo'
      AND (scheduled_at IS NULL OR scheduled_at <= now())
    ORDER BY id LIMIT 1
) w
LEFT JOIN LATERAL (
    SELECT min(at) AS at FROM procrastinate_events WHERE job_id = w.id AND type = 'deferred'
) d ON true
ORDER BY q.queue

-- name: null_snapshot_counts :one
SELECT target_populations, offers, ad_events FROM qlarius_null_snapshot_counts

-- name: pending_work :many
-- Level-triggered work waiting for the drains, per kind (both kinds always: 0 when none).
-- Columns: kind, pending, waiting_for_a_target, oldest_s.
SELECT kind, pending, waiting_for_a_target, COALESCE(oldest_s, 0)::float8 AS oldest_s
FROM qlarius_pending_work ORDER BY kind

-- name: metrics_stalled :one
SELECT count(*) AS jobs FROM qlarius_stalled_jobs

-- name: metrics_backfill_fixed :one
-- Rows the backfill fixed, over the runs kept (QLARIUS_BACKFILL_HISTORY_DAYS).
SELECT COALESCE(sum(updated_populations), 0) AS target_populations,
       COALESCE(sum(updated_offers), 0) AS offers,
       COALESCE(sum(updated_ad_events), 0) AS ad_events
FROM backfill_runs

-- name: metrics_durations :many
-- Jobs that ended in the last hour, per task and outcome: how many took at most each bound
-- (seconds, from their last start), how many in all, and their total duration.
-- Columns: task, outcome, le, below, jobs, seconds.
WITH ended AS (
    SELECT e.job_id, e.type::text AS outcome, e.at
    FROM procrastinate_events e
    WHERE e.at > now() - interval '1 hour' AND e.type IN ('succeeded', 'failed', 'aborted')
), timed AS (
    SELECT j.task_name AS task, ended.outcome,
           GREATEST(extract(epoch FROM ended.at - s.started), 0)::float8 AS seconds
    FROM ended
    JOIN procrastinate_jobs j ON j.id = ended.job_id
    CROSS JOIN LATERAL (
        SELECT max(at) AS started FROM procrastinate_events
        WHERE job_id = ended.job_id AND type = 'started' AND at <= ended.at
    ) s
    WHERE s.started IS NOT NULL
)
SELECT t.task, t.outcome, b.le, count(*) FILTER (WHERE t.seconds <= b.le) AS below,
       count(*) AS jobs, sum(t.seconds) AS seconds
FROM timed t CROSS JOIN unnest(%(bounds)s::float8[]) AS b(le)
GROUP BY t.task, t.outcome, b.le
ORDER BY t.task, t.outcome, b.le

-- name: metrics_queues_paused :many
-- Every queue's row of qlarius_queue_controls: 1 when paused. Columns: queue, paused.
SELECT queue_name AS queue, paused::int AS paused FROM qlarius_queue_controls
ORDER BY queue_name

-- name: metrics_tasks_paused :many
-- Every task's row of qlarius_task_controls: 1 when paused. Columns: task, paused.
SELECT task_name AS task, paused::int AS paused FROM qlarius_task_controls ORDER BY task_name

-- name: metrics_schedules :many
-- Every schedule: 1 when enabled, and its latest tick in the ledger (cron or run now; the
-- prune keeps each schedule's latest), as a Unix time, 0 when it never ticked.
-- Columns: task, enabled, last_tick.
SELECT task_name AS task, enabled::int AS enabled,
       COALESCE(extract(epoch FROM last_deferred_at), 0)::float8 AS last_tick
FROM qlarius_schedule_last_ticks ORDER BY task_name
