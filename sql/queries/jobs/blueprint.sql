-- Deferral (blueprint.py: JobSpec.defer, JobSpec.defer_many).

-- name: defer_job :one
-- Defer one job in the caller's transaction. The lock trigger derives lock and queueing lock
-- from the arguments; a job already waiting with the same queueing lock makes this a quiet
-- no-op (no row returned, and no unique-violation error in the server log).
INSERT INTO procrastinate_jobs (queue_name, task_name, args, scheduled_at)
VALUES (%(queue)s, %(task_name)s, %(args)s,
        CASE WHEN %(delay_seconds)s::float8 IS NOT NULL
             THEN now() + make_interval(secs => %(delay_seconds)s::float8) END)
ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING
RETURNING id

-- name: defer_jobs :many
-- Defer several jobs of one task at once, on the same terms as defer_job: one statement for
-- the batch. Columns: id (one per job deferred; none for a job already waiting).
INSERT INTO procrastinate_jobs (queue_name, task_name, args)
SELECT %(queue)s, %(task_name)s, a FROM unnest(%(args)s::jsonb[]) WITH ORDINALITY AS u(a, n)
ORDER BY n
ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING
RETURNING id

-- name: record_job_result :exec
-- A job's summary counts at its success (JobSpec.run), for the console's job list, when its
-- worker is not one of ours (a bare `procrastinate worker` on our app; ours write them with
-- the job's success, resilience.sql finish_job_of_worker): only while the job still runs for
-- this worker (a job rescued meanwhile, ended elsewhere, or deleted gets nothing from this
-- late run).
INSERT INTO qlarius_job_results (job_id, counts)
SELECT j.id, %(counts)s::jsonb FROM procrastinate_jobs j
WHERE j.id = %(job_id)s AND j.status = 'doing' AND j.worker_id = %(worker_id)s
ON CONFLICT (job_id) DO UPDATE SET counts = EXCLUDED.counts, recorded_at = now()
