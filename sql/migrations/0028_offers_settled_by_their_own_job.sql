-- A populate's offers are settled by a job of their own, settle_target_offers (queue offers,
-- jobs/target_offers.py), which the populate defers with its populations' commit, instead of
-- by the populate itself after its commit: a populate gives its targets slot back as soon as
-- its populations are in, and the pass is retried alone when it fails.

-- 1. It is one of ours (tests/integration/test_other_applications.py checks this list against
-- qlarius_jobs/jobs/catalog.py).
CREATE OR REPLACE FUNCTION qlarius_owns_job(task_name text, queue_name text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (task_name, queue_name) IN (
        ('populate_target', 'targets'),
        ('sync_pending_me_files', 'targets'),
        ('sync_me_file_to_target_populations', 'targets'),
        ('snapshot_band_populations', 'targets'),
        ('create_initial_pending_offers', 'default'),
        ('reconcile_pending_offers', 'offers'),
        ('settle_target_offers', 'offers'),
        ('reconcile_offers_for_me_file', 'offers'),
        ('backfill_missing_snapshots', 'maintenance'),
        ('backfill_snapshot_chunk', 'maintenance'),
        ('rescue_stalled_jobs', 'maintenance'),
        ('prune_finished_jobs', 'maintenance'))
$$;

-- 2. Its queueing lock, derived from its argument: one waiting per target at most.
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
        WHEN 'settle_target_offers' THEN
            -- at most one waiting per target (it takes every row when it runs). No lock: a
            -- lock would queue a new pass behind a retry scheduled minutes later; two passes
            -- of one target running at once are harmless (the second waits for the target's
            -- offers scope, which the first holds, then takes what is left)
            IF target IS NOT NULL AND NEW.args = jsonb_build_object('target_id', NEW.args -> 'target_id') THEN
                NEW.queueing_lock := CASE WHEN due_now THEN COALESCE(NEW.queueing_lock, 'settle_target_offers:' || target) END;
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
