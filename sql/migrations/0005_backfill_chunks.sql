-- A large backlog is shared out as chunk jobs (backfill_snapshot_chunk); the run's history row
-- counts them, and each chunk adds what it really updated to the run's counters.
ALTER TABLE backfill_runs ADD COLUMN chunks_deferred int NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION qlarius_job_locks() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    me_file text := NEW.args ->> 'me_file_id';
    target text := NEW.args ->> 'target_id';
BEGIN
    CASE NEW.task_name
        WHEN 'sync_me_file_to_target_populations' THEN
            NEW.queueing_lock := COALESCE(NEW.queueing_lock, 'sync_me_file_to_target_populations:' || me_file);
            NEW.lock := COALESCE(NEW.lock, 'me_file_populations:' || me_file);
        WHEN 'reconcile_offers_for_me_file' THEN
            NEW.queueing_lock := COALESCE(NEW.queueing_lock, 'reconcile_offers_for_me_file:' || me_file);
            NEW.lock := COALESCE(NEW.lock, 'me_file_offers:' || me_file);
        WHEN 'populate_target' THEN
            NEW.lock := COALESCE(NEW.lock, 'populate_target:' || target);
        WHEN 'backfill_missing_snapshots' THEN
            NEW.queueing_lock := COALESCE(NEW.queueing_lock, 'backfill_missing_snapshots');
            NEW.lock := COALESCE(NEW.lock, 'backfill_missing_snapshots');
        WHEN 'backfill_snapshot_chunk' THEN
            -- one waiting job per chunk; chunks run side by side (no lock)
            NEW.queueing_lock := COALESCE(NEW.queueing_lock, 'backfill_snapshot_chunk:'
                || (NEW.args ->> 'table') || ':' || (NEW.args ->> 'first_id'));
        ELSE
            NULL;
    END CASE;
    RETURN NEW;
END;
$$;
