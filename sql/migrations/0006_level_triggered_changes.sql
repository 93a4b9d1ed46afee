-- Level-triggered work: a committed tag change (or population change) leaves a pending row
-- that a later drain is bound to see, instead of an edge (a job) that a race can lose.
-- See README "Concurrency" for the protocol; the lock order is:
--   scope job (populate, offers):  batch barrier (brief, session) -> its target's scope row
--   drain (sync, reconcile):       drainer (session, try) -> batch (xact) -> scope rows (SKIP LOCKED)
-- No job ever locks a row the application updates (targets, me_files, me_file_tags).

-- 1. Domain integrity -------------------------------------------------------------------

-- A tag is an answer: its trait must be a child trait. (Band matching would count a tag on a
-- parent trait while the snapshot, which lists children, dropped it.)
CREATE FUNCTION qlarius_check_tag_trait() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parent_name text;
BEGIN
    SELECT trait_name INTO parent_name FROM traits
    WHERE id = NEW.trait_id AND parent_trait_id IS NULL;
    IF FOUND THEN
        RAISE EXCEPTION 'me_file_tags: trait % (%) is a parent trait (a question); tag one of its child traits (an answer)',
            NEW.trait_id, parent_name USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER me_file_tags_child_trait BEFORE INSERT OR UPDATE OF trait_id ON me_file_tags
    FOR EACH ROW EXECUTE FUNCTION qlarius_check_tag_trait();

-- A trait group is a subset of ONE parent's children.
CREATE FUNCTION qlarius_check_group_trait() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    group_parent bigint;
    trait_parent bigint;
BEGIN
    SELECT parent_trait_id INTO group_parent FROM trait_groups WHERE id = NEW.trait_group_id;
    SELECT parent_trait_id INTO trait_parent FROM traits WHERE id = NEW.trait_id;
    IF trait_parent IS DISTINCT FROM group_parent THEN
        RAISE EXCEPTION 'trait_group_traits: trait % is not a child of trait %, the parent of trait group %',
            NEW.trait_id, group_parent, NEW.trait_group_id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER trait_group_traits_same_parent BEFORE INSERT OR UPDATE ON trait_group_traits
    FOR EACH ROW EXECUTE FUNCTION qlarius_check_group_trait();

-- ... and neither rule can be broken afterwards by moving a trait or a group.
CREATE FUNCTION qlarius_check_trait_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.parent_trait_id IS NULL AND EXISTS (SELECT 1 FROM me_file_tags WHERE trait_id = NEW.id) THEN
        RAISE EXCEPTION 'traits: trait % is used by tags, so it must stay a child trait', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM trait_group_traits tgt JOIN trait_groups g ON g.id = tgt.trait_group_id
               WHERE tgt.trait_id = NEW.id AND g.parent_trait_id IS DISTINCT FROM NEW.parent_trait_id) THEN
        RAISE EXCEPTION 'traits: trait % belongs to a trait group of another parent', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER traits_keep_tags_and_groups BEFORE UPDATE OF parent_trait_id ON traits
    FOR EACH ROW WHEN (OLD.parent_trait_id IS DISTINCT FROM NEW.parent_trait_id)
    EXECUTE FUNCTION qlarius_check_trait_move();

CREATE FUNCTION qlarius_check_group_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM trait_group_traits tgt JOIN traits t ON t.id = tgt.trait_id
               WHERE tgt.trait_group_id = NEW.id AND t.parent_trait_id IS DISTINCT FROM NEW.parent_trait_id) THEN
        RAISE EXCEPTION 'trait_groups: group % holds traits that are not children of trait %',
            NEW.id, NEW.parent_trait_id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER trait_groups_keep_members BEFORE UPDATE OF parent_trait_id ON trait_groups
    FOR EACH ROW WHEN (OLD.parent_trait_id IS DISTINCT FROM NEW.parent_trait_id)
    EXECUTE FUNCTION qlarius_check_group_move();

-- 2. Pending work ------------------------------------------------------------------------

-- A MeFile whose populations must be brought in line with its tags. Append-only for writers
-- (the application never waits on a job here, and a second change is never refused); a drain
-- deletes the rows it applied in the transaction that applies them. target_id NULL: every
-- target; set: only that target, whose populate was running when the change was drained.
CREATE TABLE qlarius_pending_syncs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    me_file_id bigint NOT NULL,
    target_id bigint REFERENCES targets (id) ON DELETE CASCADE,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    retry_after timestamptz  -- set on rows a batch had to leave (a row locked elsewhere)
);
CREATE INDEX qlarius_pending_syncs_me_file_idx ON qlarius_pending_syncs (me_file_id);

-- A MeFile whose offers must be reconciled with its populations (same shape and rules).
CREATE TABLE qlarius_pending_reconciles (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    me_file_id bigint NOT NULL,
    target_id bigint REFERENCES targets (id) ON DELETE CASCADE,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    retry_after timestamptz  -- set on rows a batch had to leave (a row locked elsewhere)
);
CREATE INDEX qlarius_pending_reconciles_me_file_idx ON qlarius_pending_reconciles (me_file_id);

-- Whoever commits pending work wakes the workers: NOTIFY is delivered at commit, so a drain
-- job deferred on its receipt starts after the rows are visible (see runner's wakeups).
CREATE FUNCTION qlarius_wake_drains() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('qlarius_wakeup', TG_ARGV[0]);
    RETURN NULL;
END;
$$;
CREATE TRIGGER qlarius_pending_syncs_wake AFTER INSERT ON qlarius_pending_syncs
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_wake_drains('sync');
CREATE TRIGGER qlarius_pending_reconciles_wake AFTER INSERT ON qlarius_pending_reconciles
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_wake_drains('reconcile');

-- Every committed change to a MeFile's tags records a pending sync, in the application's own
-- transaction: nothing to forget, nothing to lose. (One row per MeFile and statement.)
CREATE FUNCTION qlarius_record_tag_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO qlarius_pending_syncs (me_file_id) SELECT DISTINCT me_file_id FROM new_tags;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO qlarius_pending_syncs (me_file_id) SELECT DISTINCT me_file_id FROM old_tags;
    ELSE
        INSERT INTO qlarius_pending_syncs (me_file_id)
        SELECT me_file_id FROM new_tags UNION SELECT me_file_id FROM old_tags;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER me_file_tags_record_inserts AFTER INSERT ON me_file_tags
    REFERENCING NEW TABLE AS new_tags
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_record_tag_changes();
CREATE TRIGGER me_file_tags_record_updates AFTER UPDATE ON me_file_tags
    REFERENCING NEW TABLE AS new_tags OLD TABLE AS old_tags
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_record_tag_changes();
CREATE TRIGGER me_file_tags_record_deletes AFTER DELETE ON me_file_tags
    REFERENCING OLD TABLE AS old_tags
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_record_tag_changes();

-- 3. Scope locks --------------------------------------------------------------------------

-- Rows only jobs lock. A populate holds (T, 'populations') FOR UPDATE for its transaction;
-- create_initial_pending_offers holds (T, 'offers'). Drain batches take the scope rows they
-- can FOR SHARE SKIP LOCKED: a busy target is skipped and its part of the work deferred to a
-- (me_file, target) pending row, so neither side ever waits for the other's whole run.
CREATE TABLE qlarius_target_locks (
    target_id bigint NOT NULL REFERENCES targets (id) ON DELETE CASCADE,
    scope text NOT NULL CHECK (scope IN ('populations', 'offers')),
    PRIMARY KEY (target_id, scope)
);
INSERT INTO qlarius_target_locks (target_id, scope)
SELECT id, scope FROM targets, (VALUES ('populations'), ('offers')) s(scope);

CREATE FUNCTION qlarius_add_target_locks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO qlarius_target_locks (target_id, scope)
    SELECT n.id, s.scope FROM new_targets n, (VALUES ('populations'), ('offers')) s(scope);
    RETURN NULL;
END;
$$;
CREATE TRIGGER targets_add_locks AFTER INSERT ON targets
    REFERENCING NEW TABLE AS new_targets
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_add_target_locks();

-- Targets whose populations are maintained by syncs: populated, or being re-populated with
-- the populations of an earlier run still in place.
CREATE VIEW qlarius_synced_targets AS
SELECT id AS target_id FROM targets
WHERE population_status = 'populated' OR status_before_populating = 'populated';

-- 4. How long a change waited: commit of the change -> commit of the drain that applied it.
-- A cumulative histogram (Prometheus' shape), one row per drain kind and bucket, written by
-- the drains (see finish_drain_batch.sql for the buckets).
CREATE TABLE qlarius_change_lag (
    kind text NOT NULL CHECK (kind IN ('sync', 'reconcile')),
    le_ms bigint NOT NULL,  -- upper bound of the bucket; 9223372036854775807 is +Inf
    changes bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, le_ms)
);

-- 5. Job locks: derived from arguments, and only from well-formed ones, so a malformed
-- deferral (`{"target_id": "42"}`) never holds the place of a real job.
CREATE FUNCTION qlarius_positive_id(args jsonb, key text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(args -> key) = 'number'
                 AND (args ->> key) ~ '^[1-9][0-9]{0,18}$' THEN args ->> key END
$$;

CREATE OR REPLACE FUNCTION qlarius_job_locks() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    target text := qlarius_positive_id(NEW.args, 'target_id');
    periodic_only boolean := (NEW.args - 'timestamp') = '{}'::jsonb
        AND COALESCE(jsonb_typeof(NEW.args -> 'timestamp'), 'number') = 'number';
BEGIN
    CASE NEW.task_name
        WHEN 'populate_target' THEN
            IF target IS NOT NULL AND NEW.args = jsonb_build_object('target_id', (NEW.args -> 'target_id')) THEN
                NEW.lock := COALESCE(NEW.lock, 'populate_target:' || target);
            END IF;
        WHEN 'backfill_missing_snapshots' THEN
            IF periodic_only THEN
                NEW.queueing_lock := COALESCE(NEW.queueing_lock, 'backfill_missing_snapshots');
                NEW.lock := COALESCE(NEW.lock, 'backfill_missing_snapshots');
            END IF;
        WHEN 'sync_pending_me_files', 'reconcile_pending_offers' THEN
            -- at most one waiting; running ones coordinate in the database (drainer lock)
            IF periodic_only THEN
                NEW.queueing_lock := COALESCE(NEW.queueing_lock, NEW.task_name);
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

-- 6. Every change to a population row records a pending reconcile of its MeFile's offers,
-- in the same transaction, whoever makes it (populate, sync, a snapshot fill): offers can
-- never drift from populations unnoticed. Only bands some campaign bids on can carry offers.
CREATE FUNCTION qlarius_record_population_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO qlarius_pending_reconciles (me_file_id)
        SELECT DISTINCT n.me_file_id FROM new_rows n
        WHERE EXISTS (SELECT 1 FROM bids b WHERE b.target_band_id = n.target_band_id);
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO qlarius_pending_reconciles (me_file_id)
        SELECT DISTINCT o.me_file_id FROM old_rows o
        WHERE EXISTS (SELECT 1 FROM bids b WHERE b.target_band_id = o.target_band_id);
    ELSE
        INSERT INTO qlarius_pending_reconciles (me_file_id)
        SELECT DISTINCT n.me_file_id FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE (n.matching_tags_snapshot IS DISTINCT FROM o.matching_tags_snapshot
               OR n.target_band_id <> o.target_band_id OR n.me_file_id <> o.me_file_id)
          AND EXISTS (SELECT 1 FROM bids b
                      WHERE b.target_band_id IN (n.target_band_id, o.target_band_id));
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER target_populations_record_inserts AFTER INSERT ON target_populations
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_record_population_changes();
CREATE TRIGGER target_populations_record_updates AFTER UPDATE ON target_populations
    REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_record_population_changes();
CREATE TRIGGER target_populations_record_deletes AFTER DELETE ON target_populations
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_record_population_changes();

-- The eligibility view gains the campaign's target, so reconciles can leave a busy target's
-- campaigns to later.
CREATE OR REPLACE VIEW qlarius_eligible_offers AS
SELECT c.id AS campaign_id,
       tp.me_file_id,
       first_run.id AS media_run_id,
       tp.target_band_id,
       b.offer_amt,
       b.marketer_cost_amt,
       tp.id AS population_id,
       tp.matching_tags_snapshot,
       c.target_id
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
