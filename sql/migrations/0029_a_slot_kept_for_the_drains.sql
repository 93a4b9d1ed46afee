-- Each worker keeps one slot of its queue for the jobs that must never wait behind long ones.
-- The syncs share the targets queue with populate_target: five populates of a large target
-- (minutes each at millions of MeFiles) took every slot of a worker's targets queue, and every
-- tag change waited for one of them to end before its sync could start. The same on the offers
-- queue (settle_target_offers beside the reconcile drain) and on maintenance (a backfill's
-- chunk jobs beside the rescue of stalled jobs).

-- 1. The jobs that may take a worker's last free slot: the drains (they apply every change,
-- and one runs at a time), the rescue, and every job that is not ours (an application's own
-- jobs in our queues are never held back). tests/integration/test_last_slot.py checks the
-- list against qlarius_jobs/jobs/catalog.py (JobSpec.takes_last_slot).
CREATE FUNCTION qlarius_job_takes_last_slot(task_name text, queue_name text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT NOT qlarius_owns_job(task_name, queue_name) OR (task_name, queue_name) IN (
        ('sync_pending_me_files', 'targets'),
        ('sync_me_file_to_target_populations', 'targets'),
        ('reconcile_pending_offers', 'offers'),
        ('reconcile_offers_for_me_file', 'offers'),
        ('rescue_stalled_jobs', 'maintenance'))
$$;

-- 2. The fetch of our workers (0026), asked by the worker whether to keep its last slot: a
-- worker process knows, in memory, which jobs each of its queues runs now and the queue's
-- concurrency (its own, or a cap of qlarius_queue_controls); while the queue's other jobs of
-- ours fill all its slots but one (at least one: a queue of concurrency 1 keeps none), it
-- fetches only jobs that take the last slot. A flag, not a count: a worker fetches one job at
-- a time, so its answer holds for its fetch. The 0026 signature is replaced (a call with two
-- arguments, as a worker of the previous release makes during a rolling upgrade, still works:
-- the flag defaults to false). The flag chooses between two statements, each with its own
-- cached plan and Procrastinate's two parameters: as one statement with the flag in it, the
-- filtered fetch walked every waiting populate before it found a sync (22 ms a fetch with
-- 50,000 waiting, found by a review), and the flag's clause weighed on every other fetch.
DROP FUNCTION qlarius_fetch_job(character varying[], bigint);
CREATE FUNCTION qlarius_fetch_job(target_queue_names character varying[], p_worker_id bigint,
                                  keep_last_slot boolean DEFAULT false)
RETURNS procrastinate_jobs LANGUAGE plpgsql AS $$
DECLARE
    found_jobs procrastinate_jobs;
BEGIN
    IF target_queue_names IS NOT NULL AND target_queue_names::text[] <@ ARRAY(
        SELECT queue_name FROM qlarius_queue_controls WHERE paused
    ) THEN
        RETURN NULL;  -- every queue asked for is paused: not even a look at the jobs
    END IF;
    IF keep_last_slot THEN
        -- only the jobs that take the last slot: read from their own partial index (3.)
        -- rather than found among every waiting job of the queue
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
                    AND qlarius_job_takes_last_slot(jobs.task_name, jobs.queue_name)
                ORDER BY jobs.priority DESC, jobs.id ASC LIMIT 1
                FOR UPDATE OF jobs SKIP LOCKED
        )
        UPDATE procrastinate_jobs
            SET status = 'doing', worker_id = p_worker_id
            FROM candidate
            WHERE procrastinate_jobs.id = candidate.id
            RETURNING procrastinate_jobs.* INTO found_jobs;
    ELSE
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
    END IF;

    RETURN found_jobs;
END;
$$;

-- 3. The jobs that take the last slot, waiting, in the fetch's order: what the filtered fetch
-- reads, however many long jobs wait before them (a few index entries: drains wait one at a
-- time, by their queueing lock).
CREATE INDEX qlarius_jobs_taking_last_slot_idx ON procrastinate_jobs (priority DESC, id)
    WHERE status = 'todo' AND qlarius_job_takes_last_slot(task_name, queue_name);
