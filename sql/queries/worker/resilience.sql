-- A job's outcome written after a lost connection (resilience.py): guarded by its worker.

-- name: finish_job_of_worker :one
-- Procrastinate's finish_job, guarded: only while the job is still running for this worker.
-- (A worker that lost the database for long may find its job rescued and run by another; its
-- late result must not overwrite that run's.) A success's summary counts (JobSpec.run, for
-- the console's job list, migration 0019) are written by the same statement, under the same
-- guard: one round trip and one commit per job instead of two.
WITH job AS (
    SELECT id FROM procrastinate_jobs
    WHERE id = %(job_id)s AND status = 'doing'
      AND (worker_id IS NOT DISTINCT FROM %(worker_id)s
           -- its worker's row deleted (worker cleared), and no rescue since (same attempt):
           -- still this run's
           OR (worker_id IS NULL AND attempts = %(attempts)s))
    FOR UPDATE
),
finished AS (
    SELECT procrastinate_finish_job_v1(id, %(status)s::procrastinate_job_status, %(delete_job)s)
    FROM job
),
recorded AS (
    INSERT INTO qlarius_job_results (job_id, counts)
    SELECT id, %(counts)s::jsonb FROM job
    WHERE %(counts)s::jsonb IS NOT NULL AND %(status)s = 'succeeded' AND NOT %(delete_job)s
    ON CONFLICT (job_id) DO UPDATE SET counts = EXCLUDED.counts, recorded_at = now()
)
SELECT count(*) AS finished FROM finished

-- name: retry_job_of_worker :one
-- Procrastinate's retry_job, guarded like finish_job_of_worker.
WITH job AS (
    SELECT id FROM procrastinate_jobs
    WHERE id = %(job_id)s AND status = 'doing'
      AND (worker_id IS NOT DISTINCT FROM %(worker_id)s
           -- its worker's row deleted (worker cleared), and no rescue since (same attempt):
           -- still this run's
           OR (worker_id IS NULL AND attempts = %(attempts)s))
    FOR UPDATE
),
retried AS (
    SELECT procrastinate_retry_job_v2(id, %(retry_at)s::timestamptz, %(priority)s::integer,
                                      %(queue)s::varchar, %(lock)s::varchar)
    FROM job
)
SELECT count(*) AS retried FROM retried

-- name: requeue_unclaimed_jobs :one
-- Jobs a worker's lost fetch claimed on the server (doing, for this worker, not running in it):
-- back to the queue, attempts unchanged (they never ran).
WITH lost AS (
    UPDATE procrastinate_jobs SET status = 'todo'
    WHERE worker_id = %(worker_id)s AND status = 'doing' AND id <> ALL(%(running)s::bigint[])
    RETURNING id
)
SELECT array_agg(id ORDER BY id) AS requeued FROM lost

-- name: fetch_job :one
-- Procrastinate's fetch_job, through qlarius_fetch_job: a paused queue's or task's jobs stay
-- waiting; with keep_last_slot, only jobs that take a queue's last slot (last_slot.py). No
-- job: a row of NULLs.
SELECT id, status, task_name, priority, lock, queueing_lock, args, scheduled_at, queue_name,
       attempts, worker_id
FROM qlarius_fetch_job(%(queues)s::varchar[], %(worker_id)s, %(keep_last_slot)s)

-- name: heartbeat_of_worker :one
-- Procrastinate's heartbeat (procrastinate_update_heartbeat_v1); a worker whose row a rescue
-- removed (its heartbeat looked stalled: the process was paused, or the database away for
-- longer than the stalled limit) is registered again under its own id, with its introduction
-- when it had one (queue NULL: none), and takes back the jobs still running in it that the
-- row's deletion left without a worker (ON DELETE SET NULL) and no rescue took since (the
-- same attempt). Says whether this statement registered it again (another one racing it, a
-- fetch's, says so instead: one line).
WITH beat AS (
    UPDATE procrastinate_workers SET last_heartbeat = now() WHERE id = %(worker_id)s
    RETURNING id
),
registered_again AS (
    INSERT INTO procrastinate_workers (id, last_heartbeat) OVERRIDING SYSTEM VALUE
    SELECT %(worker_id)s, now() WHERE NOT EXISTS (SELECT 1 FROM beat)
    ON CONFLICT (id) DO UPDATE SET last_heartbeat = now()
    RETURNING id, xmax = 0 AS inserted
),
introduced_again AS (
    INSERT INTO qlarius_worker_queues (worker_id, queue, host, pid, concurrency)
    SELECT r.id, %(queue)s, %(host)s, %(pid)s, %(concurrency)s
    FROM registered_again r WHERE %(queue)s::text IS NOT NULL
    ON CONFLICT (worker_id) DO NOTHING
),
taken_back AS (
    UPDATE procrastinate_jobs j SET worker_id = %(worker_id)s
    FROM (
        SELECT c.id FROM procrastinate_jobs c
        JOIN unnest(%(running)s::bigint[], %(attempts)s::int[]) AS r(id, attempts)
          ON c.id = r.id AND c.attempts = r.attempts
        -- worker_id = ours passes in this statement's snapshot when it waited for the
        -- deletion (on the worker's row) and is checked again on the row as the deletion left
        -- it, once locked
        WHERE c.status = 'doing' AND (c.worker_id IS NULL OR c.worker_id = %(worker_id)s)
          AND EXISTS (SELECT 1 FROM registered_again)
        ORDER BY c.id
        -- one a rescue holds is the rescue's: never wait for it (its prune may wait for us)
        FOR UPDATE OF c SKIP LOCKED
    ) t
    WHERE j.id = t.id
    RETURNING j.id
)
SELECT coalesce((SELECT inserted FROM registered_again), false) AS registered_again,
       (SELECT array_agg(id ORDER BY id) FROM taken_back) AS reattached
