-- Defer a job unless one with the same queueing lock is already waiting; quiet either way
-- (no unique-violation error in the server log). The lock trigger fills the queueing lock.
INSERT INTO procrastinate_jobs (queue_name, task_name, args, queueing_lock)
VALUES (%(queue)s, %(task_name)s::text, '{}'::jsonb, %(task_name)s::text)
ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING
RETURNING id
