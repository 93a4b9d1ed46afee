-- What a hostile review of 0013 found (tests/integration/test_review_findings.py):
--
-- 1. A criteria or trait change resolved "which targets" inside the application's
--    transaction, from its own snapshot: two changes committed side by side (a trait added to a
--    group while the group is added to a band; a trait renamed while it is added to a group)
--    each missed the other's half, and the target was never re-populated with both. Now the
--    triggers record only the keys that changed (a group, a band, a trait), and the workers'
--    sweep resolves them into targets (and campaigns) after they commit: whichever of two
--    changes commits last is resolved seeing both.
-- 2. A band moved to another target left the campaigns bidding on it with their offers: the
--    sweep's resolution of a band also makes its bidding campaigns pending.
-- 3. Deleting the ad event that completed an offer changes what a deactivated campaign keeps
--    and what amounts an offer carries: its campaign becomes pending.
-- 4. A populate that fails while the application holds its target's row no longer waits for
--    that transaction in the job's final status write: the restore takes the row NOWAIT, and
--    the sweep restores a target left 'populating' with no populate alive and none pending.

-- 0013's way of resolving a criteria change in the application's transaction, gone with it.
DROP FUNCTION qlarius_targets_of_groups(bigint[]);

-- Whether a populate of the target is running or waiting (the sweep asks it in four places).
CREATE FUNCTION qlarius_populate_alive(p_target bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM procrastinate_jobs j
        WHERE j.task_name = 'populate_target' AND j.queue_name = 'targets'
          AND j.status IN ('todo', 'doing')
          AND qlarius_job_arg_id(j.args, 'target_id') = p_target)
$$;

CREATE TABLE qlarius_pending_criteria (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trait_group_id bigint,   -- its traits changed
    target_band_id bigint,   -- its groups changed, or it moved to another target
    trait_id bigint,         -- its name, order or parent changed
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TRIGGER qlarius_pending_criteria_wake AFTER INSERT ON qlarius_pending_criteria
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_wake_drains('target');

CREATE OR REPLACE FUNCTION qlarius_criteria_changed() RETURNS trigger LANGUAGE plpgsql AS $$
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
        INSERT INTO qlarius_pending_criteria (trait_group_id)
        SELECT DISTINCT g FROM unnest(groups) g WHERE g IS NOT NULL;
    ELSIF TG_TABLE_NAME = 'target_band_trait_groups' THEN
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            bands := ARRAY(SELECT target_band_id FROM new_rows);
        END IF;
        IF TG_OP IN ('DELETE', 'UPDATE') THEN
            bands := bands || ARRAY(SELECT target_band_id FROM old_rows);
        END IF;
        INSERT INTO qlarius_pending_criteria (target_band_id)
        SELECT DISTINCT b FROM unnest(bands) b WHERE b IS NOT NULL;
    ELSE  -- target_bands: added, removed or moved; the targets are in the rows themselves
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            targets := ARRAY(SELECT target_id FROM new_rows);
        END IF;
        IF TG_OP IN ('DELETE', 'UPDATE') THEN
            targets := targets || ARRAY(SELECT target_id FROM old_rows);
        END IF;
        IF TG_OP = 'UPDATE' THEN  -- a moved band: its bidding campaigns too (resolved later)
            INSERT INTO qlarius_pending_criteria (target_band_id)
            SELECT DISTINCT id FROM new_rows;
        END IF;
        PERFORM qlarius_record_targets(targets);
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION qlarius_traits_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO qlarius_pending_criteria (trait_id)
    SELECT n.id
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE (n.trait_name, n.display_order, n.parent_trait_id)
          IS DISTINCT FROM (o.trait_name, o.display_order, o.parent_trait_id);
    RETURN NULL;
END;
$$;

-- 3. Ad events that completed an offer, deleted or changed.
CREATE FUNCTION qlarius_completions_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    campaigns bigint[];
BEGIN
    IF TG_OP = 'DELETE' THEN
        campaigns := ARRAY(SELECT campaign_id FROM old_rows WHERE is_offer_complete);
    ELSE
        -- a completion set or taken back, or moved to another offer; not an offer_id set to
        -- NULL by the deletion of its offer (ON DELETE SET NULL): whoever deleted the offer
        -- decided already, and every reconcile deleting offers would otherwise re-offer the
        -- whole campaign
        campaigns := ARRAY(
            SELECT x.campaign_id
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            CROSS JOIN LATERAL (VALUES (o.campaign_id), (n.campaign_id)) x(campaign_id)
            WHERE o.is_offer_complete IS DISTINCT FROM n.is_offer_complete
               OR (n.offer_id IS NOT NULL AND n.offer_id IS DISTINCT FROM o.offer_id));
    END IF;
    PERFORM qlarius_record_campaigns(campaigns);
    RETURN NULL;
END;
$$;
CREATE TRIGGER ad_events_record_deletes AFTER DELETE ON ad_events
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_completions_changed();
CREATE TRIGGER ad_events_record_updates AFTER UPDATE ON ad_events
    REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_completions_changed();
CREATE TRIGGER ad_events_record_truncate AFTER TRUNCATE ON ad_events
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_truncated('campaigns');

-- 4. The restore of an ended populate never waits on the application's row lock.
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
        -- NOWAIT: an application transaction holding the row must not hold up the job's
        -- status write; the workers' sweep restores the target once the row is free
        PERFORM 1 FROM targets WHERE id = target FOR NO KEY UPDATE NOWAIT;
        UPDATE targets
        SET population_status = COALESCE(status_before_populating, population_status),
            status_before_populating = NULL, updated_at = now()
        WHERE id = target AND population_status = 'populating';
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'qlarius: job % ended, but target % could not be restored now (the sweep will): %',
            job.id, target, SQLERRM;
    END;
    RETURN NULL;
END;
$$;

-- 5. Offers jobs for pending campaigns, each in a block of its own (a savepoint) with a short
-- lock timeout: a job the application is inserting right now with the same queueing lock
-- (an uncommitted offer_campaign) would make the insert wait for its transaction; that one
-- campaign is skipped until the next sweep (the application's own job comes at its commit),
-- and every other campaign still gets its job. One call, the loop runs in the server.
CREATE FUNCTION qlarius_defer_pending_offers_jobs(p_lock_timeout text) RETURNS TABLE (
    deferred int, skipped int
) LANGUAGE plpgsql AS $$
DECLARE
    campaign bigint;
    inserted int;
BEGIN
    deferred := 0;
    skipped := 0;
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    FOR campaign IN
        SELECT c.id FROM campaigns c
        WHERE EXISTS (
                SELECT 1 FROM qlarius_pending_campaigns p
                WHERE p.campaign_id = c.id AND (p.retry_after IS NULL OR p.retry_after <= now()))
        ORDER BY c.id
    LOOP
        BEGIN
            INSERT INTO procrastinate_jobs (queue_name, task_name, args)
            VALUES ('default', 'create_initial_pending_offers',
                    jsonb_build_object('campaign_id', campaign))
            ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING;
            GET DIAGNOSTICS inserted = ROW_COUNT;
            deferred := deferred + inserted;
        EXCEPTION WHEN lock_not_available THEN
            skipped := skipped + 1;
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', '0', true);
    RETURN NEXT;
END;
$$;
