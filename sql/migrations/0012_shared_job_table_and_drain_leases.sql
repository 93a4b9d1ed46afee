-- The job table is shared: an application's own Procrastinate tasks live in procrastinate_jobs
-- beside ours, and must behave exactly as Procrastinate alone makes them behave. Every
-- trigger and constraint of this project on Procrastinate's tables now touches only this
-- project's jobs, known by task name AND queue (a task of ours deferred to another queue is
-- not one of ours: no lock is derived for it, and our worker refuses to run it).
--
-- And no input can stall the runtime: every id in a job's arguments is read through one
-- function that never raises (an id past bigint, 10^19 say, is simply not an id), and the
-- triggers that run when a job ends cannot fail the status write.

-- 1. Which jobs are ours (the catalog's tasks and their queues; tests/integration/
-- test_other_applications.py checks this list against qlarius_jobs/jobs/catalog.py).
CREATE FUNCTION qlarius_owns_job(task_name text, queue_name text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (task_name, queue_name) IN (
        ('populate_target', 'targets'),
        ('sync_pending_me_files', 'targets'),
        ('sync_me_file_to_target_populations', 'targets'),
        ('snapshot_band_populations', 'targets'),
        ('create_initial_pending_offers', 'default'),
        ('reconcile_pending_offers', 'offers'),
        ('reconcile_offers_for_me_file', 'offers'),
        ('backfill_missing_snapshots', 'maintenance'),
        ('backfill_snapshot_chunk', 'maintenance'),
        ('rescue_stalled_jobs', 'maintenance'),
        ('prune_finished_jobs', 'maintenance'))
$$;

-- 2. An id argument, parsed once: a JSON integer in 1 .. 2^63-1, else NULL. Never raises
-- (the old regex let 19-digit numbers past bigint through, and a later ::bigint failed).
CREATE FUNCTION qlarius_job_arg_id(args jsonb, key text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(args -> key) = 'number'
                 AND (args ->> key) ~ '^[1-9][0-9]{0,18}$'
           THEN CASE WHEN (args ->> key)::numeric <= 9223372036854775807
                     THEN (args ->> key)::bigint END
           END
$$;

-- The text form, for lock names; kept under its old name for the readers that use it.
CREATE OR REPLACE FUNCTION qlarius_positive_id(args jsonb, key text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT qlarius_job_arg_id(args, key)::text
$$;

-- 3. Locks derived from arguments: ours only (the trigger does not even fire for others).
CREATE OR REPLACE FUNCTION qlarius_job_locks() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    due_now boolean := NEW.scheduled_at IS NULL OR NEW.scheduled_at <= now();
    target text := qlarius_positive_id(NEW.args, 'target_id');
    campaign text := qlarius_positive_id(NEW.args, 'campaign_id');
    periodic_only boolean := (NEW.args - 'timestamp') = '{}'::jsonb
        AND COALESCE(jsonb_typeof(NEW.args -> 'timestamp'), 'number') = 'number';
BEGIN
    CASE NEW.task_name
        WHEN 'populate_target' THEN
            IF target IS NOT NULL AND NEW.args = jsonb_build_object('target_id', NEW.args -> 'target_id') THEN
                NEW.lock := COALESCE(NEW.lock, 'populate_target:' || target);
            END IF;
        WHEN 'create_initial_pending_offers' THEN
            IF campaign IS NOT NULL AND NEW.args = jsonb_build_object('campaign_id', NEW.args -> 'campaign_id') THEN
                NEW.queueing_lock := CASE WHEN due_now THEN COALESCE(NEW.queueing_lock, 'create_initial_pending_offers:' || campaign) END;
            END IF;
        WHEN 'backfill_missing_snapshots' THEN
            IF periodic_only THEN
                NEW.queueing_lock := CASE WHEN due_now THEN COALESCE(NEW.queueing_lock, 'backfill_missing_snapshots') END;
                NEW.lock := COALESCE(NEW.lock, 'backfill_missing_snapshots');
            END IF;
        WHEN 'sync_pending_me_files', 'reconcile_pending_offers' THEN
            -- at most one waiting; running ones coordinate through qlarius_drain_leases
            IF periodic_only THEN
                NEW.queueing_lock := CASE WHEN due_now THEN COALESCE(NEW.queueing_lock, NEW.task_name) END;
            END IF;
        WHEN 'backfill_snapshot_chunk' THEN
            -- one waiting job per chunk; chunks run side by side (no lock)
            IF qlarius_positive_id(NEW.args, 'first_id') IS NOT NULL THEN
                NEW.queueing_lock := COALESCE(NEW.queueing_lock, 'backfill_snapshot_chunk:'
                    || (NEW.args ->> 'table') || ':' || qlarius_positive_id(NEW.args, 'first_id'));
            END IF;
        ELSE
            NULL;
    END CASE;
    RETURN NEW;
END;
$$;
DROP TRIGGER qlarius_job_locks ON procrastinate_jobs;
CREATE TRIGGER qlarius_job_locks BEFORE INSERT ON procrastinate_jobs
    FOR EACH ROW WHEN (qlarius_owns_job(NEW.task_name, NEW.queue_name))
    EXECUTE FUNCTION qlarius_job_locks();

-- 4. A retry of one of our jobs gives up its queueing lock (see 0007); another application's
-- retries keep theirs, as Procrastinate alone does.
DROP TRIGGER qlarius_job_retry_queueing_lock ON procrastinate_jobs;
CREATE TRIGGER qlarius_job_retry_queueing_lock BEFORE UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW
    WHEN (NEW.status = 'todo' AND OLD.status <> 'todo' AND NEW.queueing_lock IS NOT NULL
          AND qlarius_owns_job(NEW.task_name, NEW.queue_name))
    EXECUTE FUNCTION qlarius_job_retry_queueing_lock();

-- 5. A populate that ends without success restores its target's status (see 0007), now with
-- the id read safely, and without ever failing the write of the job's status: a failure here
-- is a WARNING in the server log, and the job still ends.
CREATE OR REPLACE FUNCTION qlarius_restore_target_after_populate() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    job procrastinate_jobs := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    target bigint := qlarius_job_arg_id(job.args, 'target_id');
BEGIN
    IF target IS NULL THEN
        RETURN NULL;
    END IF;
    BEGIN
        IF EXISTS (SELECT 1 FROM procrastinate_jobs j
                   WHERE j.task_name = 'populate_target' AND j.queue_name = 'targets'
                     AND j.id <> job.id AND j.status IN ('todo', 'doing')
                     AND qlarius_job_arg_id(j.args, 'target_id') = target) THEN
            RETURN NULL;
        END IF;
        UPDATE targets
        SET population_status = COALESCE(status_before_populating, population_status),
            status_before_populating = NULL, updated_at = now()
        WHERE id = target AND population_status = 'populating';
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'qlarius: job % ended, but target % could not be restored: %',
            job.id, target, SQLERRM;
    END;
    RETURN NULL;
END;
$$;
DROP TRIGGER qlarius_populate_ended ON procrastinate_jobs;
CREATE TRIGGER qlarius_populate_ended AFTER UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW
    WHEN (NEW.task_name = 'populate_target' AND NEW.queue_name = 'targets'
          AND OLD.status IN ('todo', 'doing') AND NEW.status IN ('failed', 'cancelled', 'aborted'))
    EXECUTE FUNCTION qlarius_restore_target_after_populate();
DROP TRIGGER qlarius_populate_deleted ON procrastinate_jobs;
CREATE TRIGGER qlarius_populate_deleted AFTER DELETE ON procrastinate_jobs
    FOR EACH ROW
    WHEN (OLD.task_name = 'populate_target' AND OLD.queue_name = 'targets'
          AND OLD.status IN ('todo', 'doing'))
    EXECUTE FUNCTION qlarius_restore_target_after_populate();

-- 6. A chunk that ends without success ends its part of the run (see 0010), ids read safely,
-- never failing the status write.
CREATE OR REPLACE FUNCTION qlarius_backfill_chunk_job_ended() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        PERFORM qlarius_end_backfill_chunk(qlarius_job_arg_id(NEW.args, 'run_id'),
                                           NEW.args ->> 'table',
                                           qlarius_job_arg_id(NEW.args, 'first_id'), true);
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'qlarius: chunk job % ended, but its run could not be updated: %',
            NEW.id, SQLERRM;
    END;
    RETURN NULL;
END;
$$;
DROP TRIGGER qlarius_backfill_chunk_failed ON procrastinate_jobs;
CREATE TRIGGER qlarius_backfill_chunk_failed AFTER UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW
    WHEN (NEW.task_name = 'backfill_snapshot_chunk' AND NEW.queue_name = 'maintenance'
          AND OLD.status IN ('todo', 'doing') AND NEW.status IN ('failed', 'cancelled', 'aborted')
          AND qlarius_job_arg_id(NEW.args, 'run_id') IS NOT NULL
          AND qlarius_job_arg_id(NEW.args, 'first_id') IS NOT NULL)
    EXECUTE FUNCTION qlarius_backfill_chunk_job_ended();

-- 7. Our jobs' arguments are a JSON object (see 0011); other applications' rows are theirs.
ALTER TABLE procrastinate_jobs DROP CONSTRAINT qlarius_job_args_are_an_object;
ALTER TABLE procrastinate_jobs
    ADD CONSTRAINT qlarius_job_args_are_an_object
    CHECK (NOT qlarius_owns_job(task_name, queue_name) OR jsonb_typeof(args) = 'object');

-- 8. One active drainer per kind, as a lease in a row rather than a session advisory lock (a
-- transaction pooler runs the lock and its unlock on different server sessions; a dead host's
-- session lock outlives it for as long as TCP keepalive takes). The holder renews it in each
-- batch's transaction; a holder that stops renewing loses it expires_at later.
CREATE TABLE qlarius_drain_leases (
    kind text PRIMARY KEY CHECK (kind IN ('sync', 'reconcile')),
    holder text NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
