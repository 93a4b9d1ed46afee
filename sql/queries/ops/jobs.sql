-- What operators do to jobs (ops/jobs.py): the same for `qlarius-jobs jobs` and the console.

-- name: list_jobs :many
-- Newest first, filtered, one page: keyset pagination on id (``before``), so a page costs
-- the same on a table of millions. Every filter is a parameter; NULL means "any".
-- Columns: id, queue, task, state, attempts, args, scheduled_at, worker_id, last_event_at.
SELECT j.id, j.queue_name AS queue, j.task_name AS task, j.status::text AS state, j.attempts,
       j.args, j.scheduled_at, j.worker_id,
       (SELECT max(e.at) FROM procrastinate_events e WHERE e.job_id = j.id) AS last_event_at
FROM procrastinate_jobs j
WHERE (%(queue)s::text IS NULL OR j.queue_name = %(queue)s)
  AND (%(state)s::text IS NULL OR j.status = %(state)s::procrastinate_job_status)
  AND (%(task)s::text IS NULL OR j.task_name = %(task)s)
  AND (%(before)s::bigint IS NULL OR j.id < %(before)s)
ORDER BY j.id DESC
LIMIT %(limit)s

-- name: get_job :one
-- Columns: id, queue, task, state, attempts, args, lock, queueing_lock, scheduled_at,
-- worker_id, abort_requested, priority.
SELECT id, queue_name AS queue, task_name AS task, status::text AS state, attempts, args, lock,
       queueing_lock, scheduled_at, worker_id, abort_requested, priority
FROM procrastinate_jobs WHERE id = %(id)s::bigint

-- name: job_errors :many
-- The job's error history, one row per attempt that did not succeed, oldest first.
SELECT attempt, at, error_type, message, traceback
FROM qlarius_job_errors WHERE job_id = %(id)s ORDER BY attempt, at

-- name: job_events :many
-- Procrastinate's events of the job (deferred, started, failed, retried...), oldest first.
SELECT type::text AS type, at FROM procrastinate_events WHERE job_id = %(id)s ORDER BY at, id

-- name: retry_job :one
-- A failed, cancelled or aborted job waits again, now, for one more attempt (as Oban's
-- retry_job). Its attempts so far are kept: the retry strategy grants one more.
UPDATE procrastinate_jobs
SET status = 'todo', scheduled_at = now(), abort_requested = false
WHERE id = %(id)s AND status IN ('failed', 'cancelled', 'aborted')
RETURNING id

-- name: cancel_job :one
-- A waiting job is cancelled (it never runs); Procrastinate's own function.
SELECT procrastinate_cancel_job_v1(%(id)s::bigint, false, false) AS id

-- name: abort_job :one
-- A running job is asked to stop (its worker cancels it at the next check); a waiting one is
-- cancelled. Procrastinate's own function.
SELECT procrastinate_cancel_job_v1(%(id)s::bigint, true, false) AS id
