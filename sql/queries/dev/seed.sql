-- The data generator and the demo (seed.py).

-- name: current_role_is_superuser :one
SELECT rolsuper AS superuser FROM pg_roles WHERE rolname = current_user

-- name: bulk_load_mode :exec
-- For the rest of the generator's transaction: no per-row foreign-key or other triggers.
SET LOCAL session_replication_role = replica

-- name: analyze_all :exec
ANALYZE

-- name: seed_function :exec
-- The data generator, as a session-local function (pg_temp): everything runs server-side and
-- set-based; only the handful of targets and campaigns are built in a loop.
-- Traits: p_parents questions ("Home Zip Code" and "Sex (Biological)" among them) with 2 to 60
-- answers each. MeFiles: about 15-40 tags each. Targets: 2-4 groups, up to 3 nested bands,
-- campaigns with a bid on every band. With p_populate: populations (snapshots inline), offers
-- and ad events, a share p_null_share of each left with a NULL snapshot (legacy data).
CREATE OR REPLACE FUNCTION pg_temp.qlarius_seed(
    p_me_files int, p_parents int, p_targets int, p_campaigns_per_target int,
    p_populate boolean, p_null_share float8, p_ad_event_share float8, p_seed float8
) RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
    trait_floor bigint := COALESCE((SELECT max(id) FROM traits), 0);
    me_file_floor bigint := COALESCE((SELECT max(id) FROM me_files), 0);
    target_floor bigint := COALESCE((SELECT max(id) FROM targets), 0);
    campaign_floor bigint := COALESCE((SELECT max(id) FROM campaigns), 0);
    v_parent_ids bigint[];
    v_group_ids bigint[];
    v_n_groups int;
    v_target_id bigint;
    v_group_id bigint;
    v_band_id bigint;
    v_campaign_id bigint;
    v_chosen_parent bigint;
    v_counts jsonb;
    -- Bulk load into an empty tag table: its secondary indexes are dropped and rebuilt from
    -- their own definitions afterwards (one sort each instead of millions of insertions).
    v_bulk boolean := NOT EXISTS (SELECT 1 FROM me_file_tags);
    v_rebuild text[] := '{}';
    v_statement text;
BEGIN
    PERFORM setseed(p_seed);

    RAISE NOTICE 'qlarius-seed step 1: traits';  -- progress, for seed.py
    INSERT INTO traits (trait_name, display_order)
    SELECT CASE g WHEN 1 THEN 'Sex (Biological)' WHEN 2 THEN 'Home Zip Code'
                  ELSE 'Question ' || g END, g
    FROM generate_series(1, p_parents) g;

    INSERT INTO traits (trait_name, display_order, parent_trait_id)
    SELECT CASE p.trait_name
               WHEN 'Home Zip Code' THEN (10001 + c * 27)::text
               WHEN 'Sex (Biological)' THEN (ARRAY['Female', 'Male'])[c]
               ELSE p.trait_name || ' / answer ' || c END,
           CASE p.trait_name WHEN 'Home Zip Code' THEN 10001 + c * 27 ELSE c END,
           p.id
    FROM (SELECT id, trait_name,
                 CASE trait_name WHEN 'Home Zip Code' THEN 60 WHEN 'Sex (Biological)' THEN 2
                      ELSE 2 + floor(random() * 59)::int END AS n_children
          FROM traits WHERE parent_trait_id IS NULL AND id > trait_floor) p,
         generate_series(1, p.n_children) c;

    SELECT array_agg(id ORDER BY id) INTO v_parent_ids
    FROM traits WHERE parent_trait_id IS NULL AND id > trait_floor;

    RAISE NOTICE 'qlarius-seed step 2: MeFiles';  -- progress, for seed.py
    INSERT INTO me_files (inserted_at) SELECT now() FROM generate_series(1, p_me_files);

    IF v_bulk THEN
        SELECT coalesce(array_agg(def ORDER BY ord), '{}') INTO v_rebuild FROM (
            SELECT 1 AS ord, format('ALTER TABLE me_file_tags ADD CONSTRAINT %I %s',
                                    conname, pg_get_constraintdef(oid)) AS def
            FROM pg_constraint WHERE conrelid = 'me_file_tags'::regclass AND contype = 'u'
            UNION ALL
            SELECT 2, pg_get_indexdef(i.indexrelid)
            FROM pg_index i
            WHERE i.indrelid = 'me_file_tags'::regclass AND NOT i.indisprimary
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        ) defs;
        FOR v_statement IN
            SELECT format('ALTER TABLE me_file_tags DROP CONSTRAINT %I', conname)
            FROM pg_constraint WHERE conrelid = 'me_file_tags'::regclass AND contype = 'u'
            UNION ALL
            SELECT format('DROP INDEX %s', i.indexrelid::regclass)
            FROM pg_index i
            WHERE i.indrelid = 'me_file_tags'::regclass AND NOT i.indisprimary
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        LOOP
            EXECUTE v_statement;
        END LOOP;
    END IF;

    RAISE NOTICE 'qlarius-seed step 3: tags';  -- progress, for seed.py
    -- One answer to ~75% of the questions, a second answer to ~20%: 15-40 tags each. The
    -- draw mentions the MeFile and the question so that it is made for each pair (a filter on
    -- the picks alone would be evaluated once and shared). DISTINCT drops a repeated answer.
    WITH answers AS (
        SELECT parent_trait_id AS parent_id, array_agg(id ORDER BY id) AS ids
        FROM traits WHERE parent_trait_id IS NOT NULL AND id > trait_floor
        GROUP BY parent_trait_id
    )
    INSERT INTO me_file_tags (me_file_id, trait_id, tag_value)
    SELECT DISTINCT m.id, a.ids[1 + floor(random() * cardinality(a.ids))::int], NULL::text
    FROM me_files m
    CROSS JOIN answers a
    CROSS JOIN generate_series(1, 2) pick
    WHERE m.id > me_file_floor
      AND random() < CASE pick WHEN 1 THEN 0.75 ELSE 0.20 END + 0 * m.id + 0 * a.parent_id;

    -- Zip codes carry what the person typed.
    UPDATE me_file_tags t SET tag_value = tr.trait_name
    FROM traits tr JOIN traits parent ON parent.id = tr.parent_trait_id
    WHERE t.trait_id = tr.id AND parent.trait_name = 'Home Zip Code' AND tr.id > trait_floor
      AND t.me_file_id > me_file_floor;

    FOREACH v_statement IN ARRAY v_rebuild LOOP
        EXECUTE v_statement;
    END LOOP;

    -- Fresh rows have no statistics yet: without them the statements below plan badly.
    ANALYZE me_files, me_file_tags, traits;

    RAISE NOTICE 'qlarius-seed step 4: targets and campaigns';  -- progress, for seed.py
    -- Seeded again: the targets, bands and bids depend on the seed alone, not on how many
    -- draws the MeFiles took, so data sets of every size share them (make bench-scale
    -- compares sizes on the same targets).
    PERFORM setseed(p_seed);
    FOR t IN 1..p_targets LOOP
        INSERT INTO targets (title) VALUES ('Target ' || (target_floor + t)) RETURNING id INTO v_target_id;
        v_n_groups := 2 + floor(random() * 3)::int;
        v_group_ids := '{}';
        FOR g IN 1..v_n_groups LOOP
            v_chosen_parent := v_parent_ids[1 + floor(random() * cardinality(v_parent_ids))::int];
            INSERT INTO trait_groups (title, parent_trait_id)
            VALUES ('Group ' || t || '.' || g, v_chosen_parent) RETURNING id INTO v_group_id;
            INSERT INTO trait_group_traits (trait_group_id, trait_id)
            SELECT v_group_id, id FROM traits
            WHERE parent_trait_id = v_chosen_parent
              AND (random() < 0.4 OR id = (SELECT min(id) FROM traits WHERE parent_trait_id = v_chosen_parent));
            v_group_ids := v_group_ids || v_group_id;
        END LOOP;
        FOR ring IN 0..LEAST(3, v_n_groups) - 1 LOOP
            INSERT INTO target_bands (target_id, title, is_bullseye)
            VALUES (v_target_id, CASE ring WHEN 0 THEN 'Bullseye' ELSE 'Ring ' || ring END, ring = 0)
            RETURNING id INTO v_band_id;
            INSERT INTO target_band_trait_groups (target_band_id, trait_group_id)
            SELECT v_band_id, unnest(v_group_ids[1:v_n_groups - ring]);
        END LOOP;
        FOR c IN 1..p_campaigns_per_target LOOP
            INSERT INTO campaigns (target_id, title, launched_at)
            VALUES (v_target_id, 'Campaign ' || t || '.' || c, now() - interval '1 day')
            RETURNING id INTO v_campaign_id;
            INSERT INTO media_runs (campaign_id, frequency, ad_phase_count_to_complete)
            SELECT v_campaign_id, 1 + r, 1 + r FROM generate_series(0, 1) r;
            INSERT INTO bids (campaign_id, target_band_id, offer_amt, marketer_cost_amt)
            SELECT v_campaign_id, b.id, round((0.10 + random() * 1.90)::numeric, 2),
                   round((0.20 + random() * 2.80)::numeric, 2)
            FROM target_bands b WHERE b.target_id = v_target_id;
        END LOOP;
    END LOOP;

    -- The scope rows a trigger gives every target (triggers are off during a bulk load).
    INSERT INTO qlarius_target_locks (target_id, scope)
    SELECT t.id, s.scope FROM targets t, (VALUES ('populations'), ('offers')) s(scope)
    WHERE t.id > target_floor
    ON CONFLICT DO NOTHING;

    IF p_populate THEN
        ANALYZE trait_groups, trait_group_traits, targets, target_bands, target_band_trait_groups,
                campaigns, media_runs, bids;
        RAISE NOTICE 'qlarius-seed step 5: populations';  -- progress, for seed.py
        INSERT INTO target_populations (target_band_id, me_file_id, matching_tags_snapshot)
        SELECT s.band_id, s.me_file_id,
               CASE WHEN random() < p_null_share THEN NULL ELSE s.snapshot END
        FROM (SELECT array_agg(me_file_id) AS m, array_agg(band_id) AS b
              FROM qlarius_band_memberships WHERE target_id > target_floor) pairs,
             qlarius_matching_tags_snapshots(pairs.m, pairs.b) s;
        UPDATE targets SET population_status = 'populated', last_populated_at = now()
        WHERE id > target_floor;
        ANALYZE target_populations;

        RAISE NOTICE 'qlarius-seed step 6: offers';  -- progress, for seed.py
        INSERT INTO offers (campaign_id, me_file_id, media_run_id, target_band_id, offer_amt,
                            marketer_cost_amt, pending_until, is_current, matching_tags_snapshot)
        SELECT e.campaign_id, e.me_file_id, e.media_run_id, e.target_band_id, e.offer_amt,
               e.marketer_cost_amt, now(), true,
               CASE WHEN random() < p_null_share THEN NULL ELSE e.matching_tags_snapshot END
        FROM qlarius_eligible_offers e WHERE e.campaign_id > campaign_floor;
        ANALYZE offers;

        RAISE NOTICE 'qlarius-seed step 7: ad events';  -- progress, for seed.py
        INSERT INTO ad_events (offer_id, campaign_id, me_file_id, target_band_id, media_run_id,
                               offer_amt, marketer_cost_amt, is_offer_complete,
                               matching_tags_snapshot)
        SELECT o.id, o.campaign_id, o.me_file_id, o.target_band_id, o.media_run_id,
               o.offer_amt, o.marketer_cost_amt, random() < 0.5,
               CASE WHEN random() < p_null_share THEN NULL ELSE o.matching_tags_snapshot END
        FROM offers o WHERE o.campaign_id > campaign_floor AND random() < p_ad_event_share;
    END IF;

    SELECT jsonb_build_object(
        'traits', (SELECT count(*) FROM traits WHERE id > trait_floor),
        'me_files', (SELECT count(*) FROM me_files WHERE id > me_file_floor),
        'tags', (SELECT count(*) FROM me_file_tags WHERE me_file_id > me_file_floor),
        'targets', (SELECT count(*) FROM targets WHERE id > target_floor),
        'bands', (SELECT count(*) FROM target_bands WHERE target_id > target_floor),
        'campaigns', (SELECT count(*) FROM campaigns WHERE id > campaign_floor),
        'populations', (SELECT count(*) FROM target_populations tp JOIN target_bands b
                        ON b.id = tp.target_band_id WHERE b.target_id > target_floor),
        'offers', (SELECT count(*) FROM offers WHERE campaign_id > campaign_floor),
        'ad_events', (SELECT count(*) FROM ad_events WHERE campaign_id > campaign_floor)
    ) INTO v_counts;
    RETURN v_counts;
END;
$fn$;

-- name: seed_run :one
SELECT pg_temp.qlarius_seed(%(me_files)s, %(parents)s, %(targets)s, %(campaigns_per_target)s,
                            %(populate)s, %(null_share)s, %(ad_event_share)s, %(seed)s) AS counts

-- name: me_file_count :one
SELECT count(*) AS n FROM me_files

-- name: demo_job_written_by_hand :one
-- Demo: a job row an old client wrote straight into the table, with a string for an id: the
-- worker refuses it at once (no retry) and its error history says why, for the console.
INSERT INTO procrastinate_jobs (queue_name, task_name, args)
VALUES ('targets', 'populate_target', '{"target_id": "1"}') RETURNING id

-- name: demo_kickoff_targets :many
SELECT id FROM targets ORDER BY id

-- name: demo_kickoff_campaigns :many
SELECT id FROM campaigns WHERE deactivated_at IS NULL AND launched_at IS NOT NULL ORDER BY id

-- name: demo_change_tags :many
-- Demo: some MeFiles answer one more question, with an answer some target looks for (their
-- tags change, as the application would write them).
WITH picked AS (
    SELECT m.id AS me_file_id,
           (SELECT tgt.trait_id FROM trait_group_traits tgt
            ORDER BY random() + m.id * 0 LIMIT 1) AS trait_id
    FROM me_files m
    ORDER BY random()
    LIMIT %(count)s
),
added AS (
    INSERT INTO me_file_tags (me_file_id, trait_id)
    SELECT me_file_id, trait_id FROM picked
    ON CONFLICT (me_file_id, trait_id) DO NOTHING
    RETURNING me_file_id
)
SELECT DISTINCT me_file_id FROM added ORDER BY me_file_id
