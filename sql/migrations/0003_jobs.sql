-- What the jobs need: locks derived from job arguments, offer eligibility, backfill history.

-- Job locks live in the database so that they hold however a job is deferred: from code,
-- from cron, or from `procrastinate defer` on the command line.
--   queueing_lock: at most one *waiting* job (Procrastinate's unique index on todo jobs)
--   lock:          never two *running* jobs (Procrastinate runs same-lock jobs in order)
-- A lock given explicitly by the caller is kept.
CREATE FUNCTION qlarius_job_locks() RETURNS trigger LANGUAGE plpgsql AS $$
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
        ELSE
            NULL;
    END CASE;
    RETURN NEW;
END;
$$;
CREATE TRIGGER qlarius_job_locks BEFORE INSERT ON procrastinate_jobs
    FOR EACH ROW EXECUTE FUNCTION qlarius_job_locks();

-- A failed attempt goes back to 'todo' for its retry. If a newer job with the same queueing
-- lock is already waiting, the retry would break the unique index and be lost in 'doing';
-- both do the same idempotent work, so the retry drops its queueing lock instead (its lock
-- still keeps the two from running at once).
CREATE FUNCTION qlarius_job_retry_queueing_lock() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'todo' AND OLD.status <> 'todo' AND NEW.queueing_lock IS NOT NULL
       AND EXISTS (SELECT 1 FROM procrastinate_jobs
                   WHERE queueing_lock = NEW.queueing_lock AND status = 'todo' AND id <> NEW.id) THEN
        NEW.queueing_lock := NULL;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER qlarius_job_retry_queueing_lock BEFORE UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW EXECUTE FUNCTION qlarius_job_retry_queueing_lock();

-- The offers a MeFile should have: one per (campaign, MeFile) for a live campaign whose bid
-- covers the band the MeFile is in, on the campaign's first media run. Creating and
-- reconciling offers both read this view.
CREATE VIEW qlarius_eligible_offers AS
SELECT c.id AS campaign_id,
       tp.me_file_id,
       first_run.id AS media_run_id,
       tp.target_band_id,
       b.offer_amt,
       b.marketer_cost_amt,
       tp.id AS population_id,
       tp.matching_tags_snapshot
FROM campaigns c
JOIN LATERAL (
    SELECT mr.id FROM media_runs mr WHERE mr.campaign_id = c.id ORDER BY mr.id LIMIT 1
) first_run ON true
JOIN bids b ON b.campaign_id = c.id
JOIN target_bands tb ON tb.id = b.target_band_id AND tb.target_id = c.target_id
JOIN target_populations tp ON tp.target_band_id = b.target_band_id
WHERE c.deactivated_at IS NULL
  AND c.launched_at IS NOT NULL
  AND c.launched_at <= now();

-- One row per backfill run, so operators can check with SQL that it finds 0-10 rows an hour.
CREATE TABLE backfill_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id bigint,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    found_populations bigint,
    found_offers bigint,
    found_ad_events bigint,
    updated_populations bigint NOT NULL DEFAULT 0,
    updated_offers bigint NOT NULL DEFAULT 0,
    updated_ad_events bigint NOT NULL DEFAULT 0,
    orphan_offers bigint NOT NULL DEFAULT 0,
    orphan_ad_events bigint NOT NULL DEFAULT 0,
    batches int NOT NULL DEFAULT 0,
    budget_exhausted boolean NOT NULL DEFAULT false,
    elapsed_ms bigint
);
CREATE INDEX backfill_runs_started_at_idx ON backfill_runs (started_at DESC);
