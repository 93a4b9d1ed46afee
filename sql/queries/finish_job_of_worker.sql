-- Procrastinate's finish_job, guarded: only while the job is still running for this worker.
-- (A worker that lost the database for long may find its job rescued and run by another; its
-- late result must not overwrite that run's.)
WITH job AS (
    SELECT id FROM procrastinate_jobs
    WHERE id = %(job_id)s AND status = 'doing' AND worker_id IS NOT DISTINCT FROM %(worker_id)s
    FOR UPDATE
),
finished AS (
    SELECT procrastinate_finish_job_v1(id, %(status)s::procrastinate_job_status, %(delete_job)s)
    FROM job
)
SELECT count(*) AS finished FROM finished
