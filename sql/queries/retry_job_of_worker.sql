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
