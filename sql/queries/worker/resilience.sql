-- A job's outcome written after a lost connection (resilience.py): guarded by its worker.

-- name: finish_job_of_worker :one
-- Procrastinate's finish_job, guarded: only while the job is still running for this worker.
-- (A worker that lost the database for long may find its job rescued and run by another; its
-- late result must not overwrite that run's.) A success's summary counts (JobSpec.run, for
-- the console's job list, migration 0019) are written by the same statement, under the same
-- guard: one round trip and one commit per job instead of two.
WITH job AS (
    SELECT id FROM procrastinate_jobs
    WHERE id = %(job_id)s AND status = 'doing' AND worker_id IS NOT DISTINCT FROM %(worker_id)s
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
    WHERE id = %(job_id)s AND status = 'doing' AND worker_id IS NOT DISTINCT FROM %(worker_id)s
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
-- waiting. No job: a row of NULLs.
SELECT id, status, task_name, priority, lock, queueing_lock, args, scheduled_at, queue_name,
       attempts, worker_id
FROM qlarius_fetch_job(%(queues)s::varchar[], %(worker_id)s)
