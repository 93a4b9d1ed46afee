-- The fetch of our workers (qlarius_fetch_job, 0016), the same statement with the paused
-- queues and tasks read by the statement itself (NOT EXISTS against the control tables)
-- instead of passed to it as arrays. With the arrays as parameters, the cached plan of the
-- statement inside the function was judged by the planner against custom plans for each
-- array's contents, and a custom plan was made at every call: measured, about 0.4 ms of
-- planning per job fetched, nearly as much as the fetch itself (Procrastinate's own fetch,
-- whose only parameters are the queues and the worker, keeps its generic plan). Now the
-- parameters are Procrastinate's, and so is the plan. The pause holds as before: the
-- statement reads the controls as committed when it starts (READ COMMITTED), from the commit
-- of a pause on.
CREATE OR REPLACE FUNCTION qlarius_fetch_job(target_queue_names character varying[],
                                             p_worker_id bigint)
RETURNS procrastinate_jobs LANGUAGE plpgsql AS $$
DECLARE
    found_jobs procrastinate_jobs;
BEGIN
    IF target_queue_names IS NOT NULL AND target_queue_names::text[] <@ ARRAY(
        SELECT queue_name FROM qlarius_queue_controls WHERE paused
    ) THEN
        RETURN NULL;  -- every queue asked for is paused: not even a look at the jobs
    END IF;
    WITH candidate AS (
        SELECT jobs.*
            FROM procrastinate_jobs AS jobs
            WHERE
                NOT EXISTS (
                    SELECT 1
                        FROM procrastinate_jobs AS other_jobs
                        WHERE
                            jobs.lock IS NOT NULL
                            AND other_jobs.lock = jobs.lock
                            AND (
                                other_jobs.status = 'doing'
                                OR
                                (
                                    other_jobs.status = 'todo'
                                    AND (
                                        other_jobs.priority > jobs.priority
                                        OR (
                                        other_jobs.priority = jobs.priority
                                        AND other_jobs.id < jobs.id
                                        )
                                    )
                                )
                            )
                )
                AND jobs.status = 'todo'
                AND (target_queue_names IS NULL OR jobs.queue_name = ANY( target_queue_names ))
                AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
                AND NOT EXISTS (SELECT 1 FROM qlarius_queue_controls c
                                WHERE c.paused AND c.queue_name = jobs.queue_name)
                AND NOT EXISTS (SELECT 1 FROM qlarius_task_controls t
                                WHERE t.paused AND t.task_name = jobs.task_name)
            ORDER BY jobs.priority DESC, jobs.id ASC LIMIT 1
            FOR UPDATE OF jobs SKIP LOCKED
    )
    UPDATE procrastinate_jobs
        SET status = 'doing', worker_id = p_worker_id
        FROM candidate
        WHERE procrastinate_jobs.id = candidate.id
        RETURNING procrastinate_jobs.* INTO found_jobs;

    RETURN found_jobs;
END;
$$;
