-- Every input of the rules leaves pending work in the transaction that changes it (see README
-- "Concurrency"), not only tags and populations:
--   band criteria (a band's groups, a group's traits, bands themselves) and traits (name,
--   order, parent) -> a pending *target*: its populate_target runs again (one set-based
--   statement over the target, the same one every populate runs; a criteria change can move
--   any MeFile with a tag in any of the target's groups, and a renamed trait changes every
--   snapshot that carries it, so the target is the unit, not a list of MeFiles);
--   campaigns (launch, deactivation, target), bids (band, amounts), media runs -> a pending
--   *campaign*: its create_initial_pending_offers reconciles the whole campaign (or, not live,
--   withdraws its offers not yet completed).
-- The job consumes the rows in its own transaction, after taking its scope, before it reads:
-- a change committed later leaves its row for the next run. Jobs are only wake-ups: the
-- workers' sweep defers one for every scope with pending rows and no waiting job.

-- 1. The pending tables. No foreign keys: recording never waits for a delete in flight, and
-- a row whose target or campaign is gone is simply dropped by the next sweep.
CREATE TABLE qlarius_pending_targets (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target_id bigint NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    retry_after timestamptz  -- set on rows a job had to leave (a row locked elsewhere)
);
CREATE INDEX qlarius_pending_targets_target_idx ON qlarius_pending_targets (target_id);

CREATE TABLE qlarius_pending_campaigns (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id bigint NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    retry_after timestamptz
);
CREATE INDEX qlarius_pending_campaigns_campaign_idx ON qlarius_pending_campaigns (campaign_id);

CREATE TRIGGER qlarius_pending_targets_wake AFTER INSERT ON qlarius_pending_targets
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_wake_drains('target');
CREATE TRIGGER qlarius_pending_campaigns_wake AFTER INSERT ON qlarius_pending_campaigns
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_wake_drains('campaign');

CREATE FUNCTION qlarius_record_targets(target_ids bigint[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO qlarius_pending_targets (target_id)
    SELECT DISTINCT t FROM unnest(target_ids) t WHERE t IS NOT NULL
$$;

CREATE FUNCTION qlarius_record_campaigns(campaign_ids bigint[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO qlarius_pending_campaigns (campaign_id)
    SELECT DISTINCT c FROM unnest(campaign_ids) c WHERE c IS NOT NULL
$$;

-- The targets whose bands use any of these trait groups.
CREATE FUNCTION qlarius_targets_of_groups(group_ids bigint[]) RETURNS bigint[]
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(array_agg(DISTINCT b.target_id), '{}')
    FROM target_band_trait_groups g JOIN target_bands b ON b.id = g.target_band_id
    WHERE g.trait_group_id = ANY(group_ids)
$$;

-- 2. Band criteria.
CREATE FUNCTION qlarius_criteria_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    groups bigint[];
    bands bigint[];
    targets bigint[];
BEGIN
    IF TG_TABLE_NAME = 'trait_group_traits' THEN
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            groups := ARRAY(SELECT trait_group_id FROM new_rows);
        END IF;
        IF TG_OP IN ('DELETE', 'UPDATE') THEN
            groups := groups || ARRAY(SELECT trait_group_id FROM old_rows);
        END IF;
        PERFORM qlarius_record_targets(qlarius_targets_of_groups(groups));
    ELSIF TG_TABLE_NAME = 'target_band_trait_groups' THEN
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            bands := ARRAY(SELECT target_band_id FROM new_rows);
        END IF;
        IF TG_OP IN ('DELETE', 'UPDATE') THEN
            bands := bands || ARRAY(SELECT target_band_id FROM old_rows);
        END IF;
        PERFORM qlarius_record_targets(ARRAY(
            SELECT target_id FROM target_bands WHERE id = ANY(bands)));
    ELSE  -- target_bands: a band added, removed, or moved to another target
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            targets := ARRAY(SELECT target_id FROM new_rows);
        END IF;
        IF TG_OP IN ('DELETE', 'UPDATE') THEN
            targets := targets || ARRAY(SELECT target_id FROM old_rows);
        END IF;
        PERFORM qlarius_record_targets(targets);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER trait_group_traits_record_inserts AFTER INSERT ON trait_group_traits
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_criteria_changed();
CREATE TRIGGER trait_group_traits_record_updates AFTER UPDATE ON trait_group_traits
    REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_criteria_changed();
CREATE TRIGGER trait_group_traits_record_deletes AFTER DELETE ON trait_group_traits
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_criteria_changed();
CREATE TRIGGER target_band_trait_groups_record_inserts AFTER INSERT ON target_band_trait_groups
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_criteria_changed();
CREATE TRIGGER target_band_trait_groups_record_updates AFTER UPDATE ON target_band_trait_groups
    REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_criteria_changed();
CREATE TRIGGER target_band_trait_groups_record_deletes AFTER DELETE ON target_band_trait_groups
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_criteria_changed();
CREATE TRIGGER target_bands_record_inserts AFTER INSERT ON target_bands
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_criteria_changed();
CREATE TRIGGER target_bands_record_updates AFTER UPDATE ON target_bands
    REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_criteria_changed();
CREATE TRIGGER target_bands_record_deletes AFTER DELETE ON target_bands
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_criteria_changed();

-- 3. Traits: a name, an order or a parent changes what snapshots hold (and where a tag's
-- entry sits): every target whose bands use a group with the trait, or with one of its
-- children (a parent's name and order are in its children's snapshot entries).
CREATE FUNCTION qlarius_traits_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM qlarius_record_targets(qlarius_targets_of_groups(ARRAY(
        SELECT DISTINCT tgt.trait_group_id
        FROM new_rows n
        JOIN old_rows o ON o.id = n.id
        JOIN traits t ON t.id = n.id OR t.parent_trait_id = n.id
        JOIN trait_group_traits tgt ON tgt.trait_id = t.id
        WHERE (n.trait_name, n.display_order, n.parent_trait_id)
              IS DISTINCT FROM (o.trait_name, o.display_order, o.parent_trait_id))));
    RETURN NULL;
END;
$$;
CREATE TRIGGER traits_record_updates AFTER UPDATE ON traits
    REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_traits_changed();

-- 4. Campaigns, bids, media runs: the triggers of 0007 now record pending campaigns (every
-- changed campaign, live or not: a deactivated one must withdraw its offers), instead of
-- deferring a job that might already have read (see the header).
CREATE OR REPLACE FUNCTION qlarius_offer_campaigns(campaign_ids bigint[]) RETURNS void
LANGUAGE sql AS $$
    SELECT qlarius_record_campaigns(campaign_ids)
$$;

-- 5. TRUNCATE has no rows to look at: it changes everything, so everything is pending.
CREATE FUNCTION qlarius_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_ARGV[0] = 'targets' THEN
        PERFORM qlarius_record_targets(ARRAY(SELECT id FROM targets));
    ELSE
        PERFORM qlarius_record_campaigns(ARRAY(SELECT id FROM campaigns));
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER me_file_tags_record_truncate AFTER TRUNCATE ON me_file_tags
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_truncated('targets');
CREATE TRIGGER trait_group_traits_record_truncate AFTER TRUNCATE ON trait_group_traits
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_truncated('targets');
CREATE TRIGGER target_band_trait_groups_record_truncate AFTER TRUNCATE ON target_band_trait_groups
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_truncated('targets');
CREATE TRIGGER target_populations_record_truncate AFTER TRUNCATE ON target_populations
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_truncated('targets');
CREATE TRIGGER bids_record_truncate AFTER TRUNCATE ON bids
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_truncated('campaigns');
CREATE TRIGGER media_runs_record_truncate AFTER TRUNCATE ON media_runs
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_truncated('campaigns');
CREATE TRIGGER offers_record_truncate AFTER TRUNCATE ON offers
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_truncated('campaigns');

-- 6. Deferred (me_file, target) rows lose their foreign key to targets: inserting one made a
-- drain batch wait, barrier held, for an application deleting that target. Rows of a target
-- that is gone are dropped by the drains.
ALTER TABLE qlarius_pending_syncs DROP CONSTRAINT qlarius_pending_syncs_target_id_fkey;
ALTER TABLE qlarius_pending_reconciles DROP CONSTRAINT qlarius_pending_reconciles_target_id_fkey;
CREATE INDEX qlarius_pending_syncs_target_idx ON qlarius_pending_syncs (target_id)
    WHERE target_id IS NOT NULL;
CREATE INDEX qlarius_pending_reconciles_target_idx ON qlarius_pending_reconciles (target_id)
    WHERE target_id IS NOT NULL;

-- 7. What a job writes refers to rows the application may be deleting: a population or an
-- offer references its band (and its campaign and media run); inserting one while that row is
-- being deleted would wait for the application's transaction, then fail. A job takes a
-- target's parts FOR KEY SHARE SKIP LOCKED first, and leaves the target for later when any is
-- held (being deleted): it never waits for a delete, and a delete waits at most for one batch.
CREATE FUNCTION qlarius_lock_target_parts(p_target bigint, p_scope text) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    WITH bands AS MATERIALIZED (
        SELECT id FROM target_bands WHERE target_id = p_target ORDER BY id
        FOR KEY SHARE SKIP LOCKED
    ),
    camps AS MATERIALIZED (
        SELECT id FROM campaigns WHERE p_scope = 'offers' AND target_id = p_target ORDER BY id
        FOR KEY SHARE SKIP LOCKED
    ),
    runs AS MATERIALIZED (
        SELECT r.id FROM media_runs r
        WHERE p_scope = 'offers'
          AND r.campaign_id IN (SELECT id FROM campaigns WHERE target_id = p_target)
        ORDER BY r.id
        FOR KEY SHARE SKIP LOCKED
    )
    SELECT (SELECT count(*) FROM bands) = (SELECT count(*) FROM target_bands WHERE target_id = p_target)
       AND (p_scope <> 'offers' OR (
            (SELECT count(*) FROM camps) = (SELECT count(*) FROM campaigns WHERE target_id = p_target)
        AND (SELECT count(*) FROM runs) = (SELECT count(*) FROM media_runs r
                                           JOIN campaigns c ON c.id = r.campaign_id
                                           WHERE c.target_id = p_target)))
$$;

-- The targets a drain batch may work on now, one definition for the batch and for the check
-- "is there work a batch could take" (which spun when the two disagreed): its scope row free,
-- its targets row and its parts (above) not being deleted. Share-locked for the caller's
-- transaction; never waits.
CREATE FUNCTION qlarius_free_targets(p_scope text) RETURNS SETOF bigint
LANGUAGE sql VOLATILE AS $$
    WITH scope_rows AS MATERIALIZED (
        SELECT target_id FROM qlarius_target_locks
        WHERE scope = p_scope
        ORDER BY target_id
        FOR SHARE SKIP LOCKED
    ),
    target_rows AS MATERIALIZED (
        SELECT id FROM targets
        WHERE id IN (SELECT target_id FROM scope_rows)
        ORDER BY id
        FOR KEY SHARE SKIP LOCKED
    )
    SELECT t.id FROM target_rows t
    WHERE qlarius_lock_target_parts(t.id, p_scope)
    ORDER BY t.id
$$;

-- 8. Two populates of one target ending in concurrent transactions each saw the other still
-- running, and neither restored the status (write skew): the check now waits its turn.
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
        -- one ending populate of a target at a time; the next one's check (a later
        -- statement, so a later snapshot) sees this one's end
        PERFORM pg_advisory_xact_lock(7361202, hashint8(target));
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

-- 9. Who has completed an offer (an ad event with is_offer_complete): such an offer is
-- history, its amounts stay as they were, and a deactivated campaign keeps it.
CREATE INDEX ad_events_completed_offer_idx ON ad_events (offer_id) WHERE is_offer_complete;

-- 10. The audit also compares amounts and a deactivated campaign's offers (see audit.sql).
ALTER TABLE backfill_runs
    ADD COLUMN stale_offer_amounts int NOT NULL DEFAULT 0,
    ADD COLUMN offers_of_campaigns_not_live int NOT NULL DEFAULT 0;
