-- Defer one job in the caller's transaction. The lock trigger derives lock and queueing lock
-- from the arguments; a job already waiting with the same queueing lock makes this a quiet
-- no-op (no row returned, and no unique-violation error in the server log).
INSERT INTO procrastinate_jobs (queue_name, task_name, args, scheduled_at)
VALUES (%(queue)s, %(task_name)s, %(args)s,
        CASE WHEN %(delay_seconds)s::float8 IS NOT NULL
             THEN now() + make_interval(secs => %(delay_seconds)s::float8) END)
ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING
RETURNING id
