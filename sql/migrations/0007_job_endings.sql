-- How jobs end, enforced in the database so that no code path (a time limit, an abort, the
-- rescue of a dead worker, an operator's cancel) can skip it.

-- 1. A job going back to 'todo' for another attempt never keeps a queueing lock: a fresh job
-- with the same lock may be waiting, or being inserted right now (invisible to any check
-- here), and the retry would then break the unique index and stay in 'doing' forever. Nor
-- should a retry scheduled minutes ahead hold the one waiting place: a new deferral of the
-- same work takes it instead and runs now. Both do the same idempotent work; the job's lock
-- (not its queueing lock) still keeps them from running at once.
CREATE OR REPLACE FUNCTION qlarius_job_retry_queueing_lock() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'todo' AND OLD.status <> 'todo' THEN
        NEW.queueing_lock := NULL;
    END IF;
    RETURN NEW;
END;
$$;

-- 2. A populate that ends without success (failed for good, timed out, aborted, rescued on its
-- last attempt, cancelled, deleted while waiting) leaves the populations as they were (one
-- transaction), so the target's status goes back to what it was before the trigger, unless
-- another populate of that target is still to come.
CREATE FUNCTION qlarius_restore_target_after_populate() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    job procrastinate_jobs := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    target text := qlarius_positive_id(job.args, 'target_id');
BEGIN
    IF target IS NULL THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM procrastinate_jobs j
               WHERE j.task_name = 'populate_target' AND j.id <> job.id
                 AND j.status IN ('todo', 'doing') AND j.args ->> 'target_id' = target) THEN
        RETURN NULL;
    END IF;
    UPDATE targets
    SET population_status = COALESCE(status_before_populating, population_status),
        status_before_populating = NULL, updated_at = now()
    WHERE id = target::bigint AND population_status = 'populating';
    RETURN NULL;
END;
$$;
CREATE TRIGGER qlarius_populate_ended AFTER UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW
    WHEN (NEW.task_name = 'populate_target' AND OLD.status IN ('todo', 'doing')
          AND NEW.status IN ('failed', 'cancelled', 'aborted'))
    EXECUTE FUNCTION qlarius_restore_target_after_populate();
CREATE TRIGGER qlarius_populate_deleted AFTER DELETE ON procrastinate_jobs
    FOR EACH ROW
    WHEN (OLD.task_name = 'populate_target' AND OLD.status IN ('todo', 'doing'))
    EXECUTE FUNCTION qlarius_restore_target_after_populate();

-- 3. Offers also depend on the campaign (live or not, its target), its bids and its first
-- media run. A change to any of them re-offers the live campaigns concerned: one waiting
-- create_initial_pending_offers per campaign (a quiet no-op when one already waits).
CREATE FUNCTION qlarius_offer_campaigns(campaign_ids bigint[]) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO procrastinate_jobs (queue_name, task_name, args)
    SELECT 'default', 'create_initial_pending_offers', jsonb_build_object('campaign_id', c.id)
    FROM campaigns c
    WHERE c.id = ANY(campaign_ids) AND c.launched_at IS NOT NULL AND c.deactivated_at IS NULL
    ORDER BY c.id
    ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING
$$;

CREATE FUNCTION qlarius_campaign_inputs_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'campaigns' THEN
        PERFORM qlarius_offer_campaigns(ARRAY(
            SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE (n.launched_at, n.deactivated_at, n.target_id)
                  IS DISTINCT FROM (o.launched_at, o.deactivated_at, o.target_id)));
    ELSIF TG_OP = 'INSERT' THEN
        PERFORM qlarius_offer_campaigns(ARRAY(SELECT DISTINCT campaign_id FROM new_rows));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM qlarius_offer_campaigns(ARRAY(SELECT DISTINCT campaign_id FROM old_rows));
    ELSE
        PERFORM qlarius_offer_campaigns(ARRAY(
            SELECT campaign_id FROM new_rows UNION SELECT campaign_id FROM old_rows));
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER campaigns_reoffer AFTER UPDATE ON campaigns
    REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_campaign_inputs_changed();
CREATE TRIGGER bids_reoffer_inserts AFTER INSERT ON bids
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_campaign_inputs_changed();
CREATE TRIGGER bids_reoffer_updates AFTER UPDATE ON bids
    REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_campaign_inputs_changed();
CREATE TRIGGER bids_reoffer_deletes AFTER DELETE ON bids
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_campaign_inputs_changed();
CREATE TRIGGER media_runs_reoffer_inserts AFTER INSERT ON media_runs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_campaign_inputs_changed();
CREATE TRIGGER media_runs_reoffer_deletes AFTER DELETE ON media_runs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_campaign_inputs_changed();

-- 4. How long a campaign's offers have waited for its target to be populated: kept here, not
-- in the job's arguments, so that no caller can set it.
CREATE TABLE qlarius_offer_waits (
    campaign_id bigint PRIMARY KEY REFERENCES campaigns (id) ON DELETE CASCADE,
    since timestamptz NOT NULL DEFAULT now()
);

-- 5. Job locks, now with one waiting create_initial_pending_offers per campaign. The one
-- waiting place (queueing lock) is for jobs due now: a job scheduled for later (a wait for a
-- target, a launch in the future) never makes a deferral of the same work due now a no-op.
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
            -- at most one waiting; running ones coordinate in the database (drainer lock)
            IF periodic_only THEN
                NEW.queueing_lock := CASE WHEN due_now THEN COALESCE(NEW.queueing_lock, NEW.task_name) END;
            END IF;
        WHEN 'backfill_snapshot_chunk' THEN
            -- one waiting job per chunk; chunks run side by side (no lock)
            IF qlarius_positive_id(NEW.args, 'first_id') IS NOT NULL THEN
                NEW.queueing_lock := COALESCE(NEW.queueing_lock, 'backfill_snapshot_chunk:'
                    || (NEW.args ->> 'table') || ':' || (NEW.args ->> 'first_id'));
            END IF;
        ELSE
            NULL;
    END CASE;
    RETURN NEW;
END;
$$;
