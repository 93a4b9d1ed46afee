-- The storm's own reads and resets (storm.py).

-- name: reset_change_lag :exec
-- Forget the change-lag histograms, so that they measure this storm alone.
DELETE FROM qlarius_change_lag

-- name: change_lag_histogram :many
-- One kind's cumulative histogram of the lag from a change's commit to its effect.
SELECT le_ms, changes FROM qlarius_change_lag WHERE kind = %(kind)s

-- name: work_left :one
-- Everything not yet done: jobs due or running, and every pending row, also those set aside
-- for a retry or left for a busy target (they are work too, only later).
SELECT (SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')
        AND (scheduled_at IS NULL OR scheduled_at <= now()))
     + (SELECT count(*) FROM qlarius_pending_syncs)
     + (SELECT count(*) FROM qlarius_pending_reconciles)
     + (SELECT count(*) FROM qlarius_pending_targets p JOIN targets t
        ON t.id = p.target_id WHERE t.population_status <> 'not_populated'
        OR p.retry_after IS NOT NULL)
     + (SELECT count(*) FROM qlarius_pending_criteria)
     + (SELECT count(*) FROM qlarius_pending_campaigns) AS n

-- name: stuck_job_count :one
-- Jobs due or running after the catch-up.
SELECT count(*) AS n FROM procrastinate_jobs WHERE status IN ('todo', 'doing')
AND (scheduled_at IS NULL OR scheduled_at <= now())

-- name: failed_jobs :many
-- The failed jobs, each with its last recorded error.
SELECT j.task_name, j.id, j.args, e.error_type, left(e.message, 160) AS message
FROM procrastinate_jobs j LEFT JOIN LATERAL (
  SELECT error_type, message FROM qlarius_job_errors WHERE job_id = j.id
  ORDER BY attempt DESC LIMIT 1) e ON true
WHERE j.status = 'failed' ORDER BY j.id
