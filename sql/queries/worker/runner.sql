-- The worker process (runner.py).

-- name: connection_budget :one
-- How many connections a worker process may open without taking the last ones (reserved for
-- superusers and operators) or starving the other clients.
SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int
           + COALESCE(NULLIF(current_setting('reserved_connections', true), '')::int, 0) AS reserved,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS in_use

-- name: due_jobs :one
-- Jobs due now in the given queues (whether or not a worker could take them yet); those
-- waiting for a resume (a paused queue or task, theirs or their lock's) do not count.
SELECT count(*) AS due FROM procrastinate_jobs
WHERE queue_name = ANY(%(queues)s) AND status = 'todo'
  AND (scheduled_at IS NULL OR scheduled_at <= now())
  AND NOT qlarius_waits_for_a_resume(id, queue_name, task_name, lock, priority)

-- name: introduce_worker :exec
-- Which queue a worker serves and where it runs (the console's Workers page). A worker
-- already gone (stopped before this ran) is simply not introduced.
INSERT INTO qlarius_worker_queues (worker_id, queue, host, pid, concurrency)
SELECT %(worker_id)s, %(queue)s, %(host)s, %(pid)s, %(concurrency)s
WHERE EXISTS (SELECT 1 FROM procrastinate_workers WHERE id = %(worker_id)s)
ON CONFLICT (worker_id) DO NOTHING
