-- The storm's own reads and resets (storm.py).

-- name: reset_change_lag :exec
-- Forget the change-lag histograms, so that they measure this storm alone.
DELETE FROM qlarius_change_lag

-- name: change_lag_histogram :many
-- One kind's cumulative histogram of the lag from a change's commit to its effect, as the
-- operators' view shows it (le_ms text, '+Inf' for the last bucket).
SELECT le_ms, changes FROM qlarius_change_lag_buckets WHERE kind = %(kind)s

-- name: last_job_id :one
-- The newest job now: the jobs the catch-up saw are those up to it.
SELECT coalesce(max(id), 0) AS id FROM procrastinate_jobs

-- name: stuck_job_count :one
-- Jobs due or running after the catch-up, among those it saw (a periodic tick deferred while
-- the workers were being stopped is no stuck job).
SELECT count(*) AS n FROM procrastinate_jobs WHERE status IN ('todo', 'doing')
AND (scheduled_at IS NULL OR scheduled_at <= now()) AND id <= %(through_id)s

-- name: failed_jobs :many
-- The failed jobs, each with its last recorded error.
SELECT j.task_name, j.id, j.args, e.error_type, left(e.message, 160) AS message
FROM procrastinate_jobs j LEFT JOIN LATERAL (
  SELECT error_type, message FROM qlarius_job_errors WHERE job_id = j.id
  ORDER BY attempt DESC LIMIT 1) e ON true
WHERE j.status = 'failed' ORDER BY j.id
