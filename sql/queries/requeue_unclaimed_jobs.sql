-- Jobs a worker's lost fetch claimed on the server (doing, for this worker, not running in it):
-- back to the queue, attempts unchanged (they never ran).
WITH lost AS (
    UPDATE procrastinate_jobs SET status = 'todo'
    WHERE worker_id = %(worker_id)s AND status = 'doing' AND id <> ALL(%(running)s::bigint[])
    RETURNING id
)
SELECT array_agg(id ORDER BY id) AS requeued FROM lost
