-- The error history (middleware.py).

-- name: record_job_error :exec
INSERT INTO qlarius_job_errors (job_id, task_name, attempt, error_type, message, traceback)
VALUES (%(job_id)s, %(task_name)s, %(attempt)s, %(error_type)s, %(message)s, %(traceback)s)
