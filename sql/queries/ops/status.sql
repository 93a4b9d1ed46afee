-- qlarius-jobs status (status.py): each section reads a view of sql/monitoring.sql.

-- name: status_job_counts :many
SELECT queue_name AS queue, status, jobs, earliest_scheduled FROM qlarius_job_counts

-- name: status_stalled_jobs :many
SELECT job_id, task_name, queue_name AS queue, attempts, worker_id, last_heartbeat, started_at
FROM qlarius_stalled_jobs ORDER BY job_id LIMIT 50

-- name: status_null_snapshots :many
-- The seed note's health check (the view lives in sql/monitoring.sql).
SELECT target_populations, offers, ad_events FROM qlarius_null_snapshot_counts

-- name: pending_counts :many
SELECT kind, pending, waiting_for_a_target, oldest_s AS oldest_pending_seconds
FROM qlarius_pending_work

-- name: status_backfill_runs :many
SELECT started_at, found_populations, found_offers, found_ad_events, updated_populations,
       updated_offers, updated_ad_events, orphan_offers + orphan_ad_events AS orphans,
       budget_exhausted, elapsed_ms
FROM qlarius_backfill_history LIMIT %(limit)s

-- name: status_paused :many
SELECT kind, name, since, by FROM qlarius_paused ORDER BY kind, name

-- name: status_recent_errors :many
SELECT at, job_id, task_name, attempt, error_type, left(message, 120) AS message, job_status
FROM qlarius_recent_job_errors LIMIT %(limit)s
