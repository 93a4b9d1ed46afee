-- The runner benchmark (bench/runner.py): no-op jobs drained by worker processes.

-- name: bench_runner_count_noop_as_ours :exec
-- In the bench database only: the no-op job counts as one of ours (qlarius_owns_job, 0012), so
-- that it pays what our jobs pay in the database (the lock trigger, the outcome counters of
-- 0017, the argument check), as a real job of ours would. Idempotent.
DO $$
DECLARE
    body text := (SELECT prosrc FROM pg_proc WHERE proname = 'qlarius_owns_job');
BEGIN
    IF position('bench_noop' IN body) = 0 THEN
        EXECUTE 'CREATE OR REPLACE FUNCTION qlarius_owns_job(task_name text, queue_name text) '
             || 'RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS '
             || quote_literal(rtrim(rtrim(body), E'; \n')
                              || ' OR (task_name, queue_name) = (''bench_noop'', ''bench'')');
    END IF;
END;
$$

-- name: bench_runner_clear :exec
-- The no-op queues empty (their events, results and error rows go with the jobs).
DELETE FROM procrastinate_jobs WHERE queue_name = ANY(%(queues)s::text[])

-- name: bench_runner_insert :count
-- The burn-down: %(jobs)s no-op jobs, inserted in one statement before any worker starts.
INSERT INTO procrastinate_jobs (queue_name, task_name, args)
SELECT %(queue)s, %(task)s, jsonb_build_object('n', n) FROM generate_series(1, %(jobs)s) n

-- name: bench_runner_left :one
SELECT count(*) AS left FROM procrastinate_jobs
WHERE queue_name = %(queue)s AND status IN ('todo', 'doing')

-- name: bench_runner_window :one
-- A burn-down's measured interval, from the job table's events (read while its workers still
-- run: a worker's row going takes its jobs' worker_id with it). steady_from: when the last of
-- the worker processes started its first job; ended_after: the jobs that ended from then on.
-- first_start, last_end: the whole burn-down, start-up of the processes excluded.
WITH ev AS (
    SELECT j.worker_id, e.type, e.at
    FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id
    WHERE j.queue_name = %(queue)s AND e.type IN ('started', 'succeeded', 'failed')
), firsts AS (
    SELECT worker_id, min(at) AS first_start FROM ev WHERE type = 'started' GROUP BY worker_id
)
SELECT (SELECT min(first_start) FROM firsts) AS first_start,
       (SELECT max(first_start) FROM firsts) AS steady_from,
       (SELECT count(*) FROM firsts) AS workers,
       max(at) FILTER (WHERE type <> 'started') AS last_end,
       count(*) FILTER (WHERE type = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE type <> 'started'
                        AND at >= (SELECT max(first_start) FROM firsts)) AS ended_after
FROM ev
