-- The job manager of our apps (managers.py).

-- name: waiting_job_with_lock :one
-- The waiting job a refused deferral duplicates (the same queueing lock).
SELECT id FROM procrastinate_jobs WHERE queueing_lock = %(lock)s AND status = 'todo'
