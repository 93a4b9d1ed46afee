-- Band matching and snapshots (snapshots.py): the one place where a MeFile's band and its
-- matching_tags_snapshot are computed, and where the three tables' snapshots are written.

-- name: snapshots_for_pairs :many
-- The snapshot of each given (me_file, band) pair.
SELECT me_file_id, band_id, snapshot
FROM qlarius_matching_tags_snapshots(%(me_file_ids)s::bigint[], %(band_ids)s::bigint[])

-- name: me_file_range_starts :many
-- Where a populate's ranges of MeFiles start, after the first: every %(size)s-th MeFile id, in
-- order (an index-only scan of the ids). Counted in MeFiles, not in ids: sparse ids (imported,
-- or a sequence that jumped) never make thousands of empty ranges.
SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM me_files) m
WHERE mod(n - 1, %(size)s) = 0 AND n > 1
ORDER BY id

-- name: apply_band_memberships :one
-- Bring the populations of the given targets (for all MeFiles, or only the given ones, or those
-- whose id is in [from_id, below_id), either end open when NULL) in line
-- with band matching, in one statement: delete the rows that no longer hold, insert the
-- missing ones with their snapshots, and refresh the snapshot of kept rows whose tags changed.
-- Populating (one target, every MeFile) and syncing (some MeFiles, every populated target)
-- both run this, so they always agree.
-- It never waits on a row someone else holds, and never writes one it does not change: rows to
-- delete or refresh are locked FOR UPDATE SKIP LOCKED, and MeFiles to insert FOR KEY SHARE SKIP
-- LOCKED (one being deleted right now is not waited for, nor does its delete fail this
-- statement's foreign-key check). What it had to skip comes back as skipped_me_files, for the
-- caller to leave as pending work. Conflicting inserts do nothing.
WITH wanted AS MATERIALIZED (
    SELECT m.me_file_id, m.band_id
    FROM qlarius_band_memberships m
    WHERE m.target_id = ANY(%(target_ids)s::bigint[])
      AND (%(me_file_ids)s::bigint[] IS NULL OR m.me_file_id = ANY(%(me_file_ids)s::bigint[]))
      AND (%(from_id)s::bigint IS NULL OR m.me_file_id >= %(from_id)s::bigint)
      AND (%(below_id)s::bigint IS NULL OR m.me_file_id < %(below_id)s::bigint)
),
current_rows AS MATERIALIZED (
    SELECT tp.id, tp.me_file_id, tp.target_band_id AS band_id, tp.matching_tags_snapshot
    FROM target_populations tp
    JOIN target_bands b ON b.id = tp.target_band_id
    WHERE b.target_id = ANY(%(target_ids)s::bigint[])
      AND (%(me_file_ids)s::bigint[] IS NULL OR tp.me_file_id = ANY(%(me_file_ids)s::bigint[]))
      AND (%(from_id)s::bigint IS NULL OR tp.me_file_id >= %(from_id)s::bigint)
      AND (%(below_id)s::bigint IS NULL OR tp.me_file_id < %(below_id)s::bigint)
),
to_delete AS MATERIALIZED (
    SELECT c.id, c.me_file_id FROM current_rows c
    WHERE NOT EXISTS (
        SELECT 1 FROM wanted w WHERE w.me_file_id = c.me_file_id AND w.band_id = c.band_id)
),
delete_locked AS MATERIALIZED (
    SELECT tp.id, tp.me_file_id FROM target_populations tp
    WHERE tp.id IN (SELECT id FROM to_delete)
    ORDER BY tp.id
    FOR UPDATE SKIP LOCKED
),
deleted AS (
    DELETE FROM target_populations tp
    WHERE tp.id IN (SELECT id FROM delete_locked)
    RETURNING tp.me_file_id
),
pairs AS (
    SELECT array_agg(me_file_id) AS me_file_ids, array_agg(band_id) AS band_ids FROM wanted
),
snapshots AS MATERIALIZED (
    SELECT s.me_file_id, s.band_id, s.snapshot
    FROM pairs, qlarius_matching_tags_snapshots(pairs.me_file_ids, pairs.band_ids) s
),
to_insert AS MATERIALIZED (
    SELECT s.me_file_id, s.band_id, s.snapshot FROM snapshots s
    WHERE NOT EXISTS (
        SELECT 1 FROM current_rows c WHERE c.me_file_id = s.me_file_id AND c.band_id = s.band_id)
),
insert_locked AS MATERIALIZED (
    -- the rows to insert travel with their MeFile's lock (joining to_insert back to this CTE
    -- could be planned as a nested loop over two CTE scans: quadratic on a full populate)
    SELECT i.me_file_id, i.band_id, i.snapshot FROM to_insert i
    JOIN me_files m ON m.id = i.me_file_id
    ORDER BY m.id
    FOR KEY SHARE OF m SKIP LOCKED
),
inserted AS (
    INSERT INTO target_populations (target_band_id, me_file_id, matching_tags_snapshot)
    SELECT l.band_id, l.me_file_id, l.snapshot
    FROM insert_locked l
    ON CONFLICT (target_band_id, me_file_id) DO NOTHING
    RETURNING me_file_id
),
to_refresh AS MATERIALIZED (
    SELECT c.id, c.me_file_id, s.snapshot
    FROM current_rows c
    JOIN snapshots s ON s.me_file_id = c.me_file_id AND s.band_id = c.band_id
    WHERE c.matching_tags_snapshot IS DISTINCT FROM s.snapshot
),
refresh_locked AS MATERIALIZED (
    -- the new snapshot travels with the lock: joining to_refresh to this CTE again was planned
    -- as a nested loop over CTE scans (quadratic in the rows to refresh)
    SELECT tp.id, tp.me_file_id, r.snapshot FROM target_populations tp
    JOIN to_refresh r ON r.id = tp.id
    ORDER BY tp.id
    FOR UPDATE OF tp SKIP LOCKED
),
refreshed AS (
    UPDATE target_populations tp
    SET matching_tags_snapshot = l.snapshot, updated_at = now()
    FROM refresh_locked l
    WHERE tp.id = l.id
    RETURNING tp.me_file_id
)
SELECT
    (SELECT count(*) FROM deleted) AS deleted,
    (SELECT count(*) FROM inserted) AS inserted,
    (SELECT count(*) FROM refreshed) AS refreshed,
    (SELECT count(*) FROM wanted) AS members,
    -- what was skipped is a difference of sets, EXCEPT (a hash, or a sort when large): a NOT
    -- IN over a CTE is hashed only while the planner expects it to fit in hash_mem, and beyond
    -- that rescans the CTE per row (quadratic on a full populate)
    ARRAY(
        SELECT me_file_id FROM (SELECT id, me_file_id FROM to_delete
                                EXCEPT SELECT id, me_file_id FROM delete_locked) d
        UNION
        SELECT me_file_id FROM (SELECT me_file_id FROM to_insert
                                EXCEPT SELECT me_file_id FROM insert_locked) i
        UNION
        SELECT me_file_id FROM (SELECT id, me_file_id FROM to_refresh
                                EXCEPT SELECT id, me_file_id FROM refresh_locked) r
        ORDER BY 1
    ) AS skipped_me_files

-- name: fill_population_snapshots :many
-- Fill the NULL snapshots of the given populations; never overwrites. SKIP LOCKED: a row that
-- another job is writing right now gets its snapshot from that job, so a fill never waits and
-- can never be part of a deadlock. Re-checked under the lock (a rerun leaves it alone).
WITH missing AS MATERIALIZED (
    SELECT id, me_file_id, target_band_id
    FROM target_populations
    WHERE id = ANY(%(population_ids)s::bigint[]) AND matching_tags_snapshot IS NULL
    ORDER BY id
    FOR UPDATE SKIP LOCKED
),
pairs AS (
    SELECT array_agg(me_file_id) AS me_file_ids, array_agg(target_band_id) AS band_ids FROM missing
)
UPDATE target_populations tp
SET matching_tags_snapshot = s.snapshot, updated_at = now()
FROM missing m, pairs, qlarius_matching_tags_snapshots(pairs.me_file_ids, pairs.band_ids) s
WHERE tp.id = m.id
  AND s.me_file_id = m.me_file_id AND s.band_id = m.target_band_id
  AND tp.matching_tags_snapshot IS NULL
RETURNING tp.id

-- name: fill_populations_behind_copies :many
-- Fill the NULL snapshots of the populations behind the given offers or ad events ({table})
-- that have none, as fill_population_snapshots does (never overwrites, never waits), in one
-- statement with finding them. Returns the population ids really filled.
WITH missing AS MATERIALIZED (
    SELECT tp.id, tp.me_file_id, tp.target_band_id
    FROM target_populations tp
    WHERE tp.matching_tags_snapshot IS NULL
      -- the ids first (an InitPlan), then the populations by their key: a join here was
      -- planned as a hash over every population (a sequential scan per batch)
      AND tp.id = ANY(ARRAY(
          SELECT behind.id FROM {table} c
          CROSS JOIN LATERAL (
              SELECT b.id, b.matching_tags_snapshot FROM target_populations b
              WHERE b.target_band_id = c.target_band_id AND b.me_file_id = c.me_file_id
              LIMIT 1) behind
          WHERE c.id = ANY(%(ids)s::bigint[]) AND c.matching_tags_snapshot IS NULL
            AND behind.matching_tags_snapshot IS NULL))
    ORDER BY tp.id
    FOR UPDATE OF tp SKIP LOCKED
),
pairs AS (
    SELECT array_agg(me_file_id) AS me_file_ids, array_agg(target_band_id) AS band_ids FROM missing
)
UPDATE target_populations tp
SET matching_tags_snapshot = s.snapshot, updated_at = now()
FROM missing m, pairs, qlarius_matching_tags_snapshots(pairs.me_file_ids, pairs.band_ids) s
WHERE tp.id = m.id
  AND s.me_file_id = m.me_file_id AND s.band_id = m.target_band_id
  AND tp.matching_tags_snapshot IS NULL
RETURNING tp.id

-- name: fill_copied_snapshots :one
-- Give the given offers or ad events ({table}) with a NULL snapshot the snapshot of their
-- (me_file, band) population; when that population has none yet (another job is writing it
-- right now), the snapshot computed from the tags, as the population's is. Guarded by IS NULL
-- and SKIP LOCKED (a row being written elsewhere is left to that writer or the next run).
-- Returns the rows really updated, and the orphans: rows without a snapshot that no population
-- explains, which the backfill reports (a row merely locked elsewhere is not one). One
-- statement for what were three (copy, compute, orphans): a backfill batch's round trips.
WITH missing AS MATERIALIZED (
    SELECT c.id, c.me_file_id, c.target_band_id
    FROM {table} c
    WHERE c.id = ANY(%(ids)s::bigint[]) AND c.matching_tags_snapshot IS NULL
    ORDER BY c.id
    FOR UPDATE OF c SKIP LOCKED
),
sources AS MATERIALIZED (
    -- one probe of the (band, me_file) key per row (LIMIT 1 keeps it a probe: as a join it
    -- was planned as a hash over every population, a sequential scan per batch)
    SELECT m.id, m.me_file_id, m.target_band_id, tp.snapshot
    FROM missing m
    CROSS JOIN LATERAL (
        SELECT p.matching_tags_snapshot AS snapshot FROM target_populations p
        WHERE p.me_file_id = m.me_file_id AND p.target_band_id = m.target_band_id
        LIMIT 1) tp
),
pairs AS (
    SELECT array_agg(me_file_id) AS me_file_ids, array_agg(target_band_id) AS band_ids
    FROM sources WHERE snapshot IS NULL
),
computed AS MATERIALIZED (
    SELECT s.me_file_id, s.band_id, s.snapshot
    FROM pairs, qlarius_matching_tags_snapshots(pairs.me_file_ids, pairs.band_ids) s
),
filled AS (
    UPDATE {table} c
    SET matching_tags_snapshot = COALESCE(src.snapshot, cp.snapshot)
    FROM sources src
    LEFT JOIN computed cp ON cp.me_file_id = src.me_file_id AND cp.band_id = src.target_band_id
    WHERE c.id = src.id AND c.matching_tags_snapshot IS NULL
    RETURNING c.id
)
SELECT (SELECT count(*) FROM filled) AS updated,
       COALESCE((
           SELECT jsonb_agg(jsonb_build_object('id', c.id, 'me_file_id', c.me_file_id,
                                               'target_band_id', c.target_band_id)
                            ORDER BY c.id)
           FROM {table} c
           WHERE c.id = ANY(%(ids)s::bigint[]) AND c.matching_tags_snapshot IS NULL
             AND NOT EXISTS (SELECT 1 FROM target_populations tp
                             WHERE tp.target_band_id = c.target_band_id
                               AND tp.me_file_id = c.me_file_id)
       ), '[]'::jsonb) AS orphans

-- name: population_snapshot_of_offer :one
-- The snapshot of the population behind an offer (NULL: none, or not computed yet). Read only:
-- the application never writes populations (a job writing one never waits for it).
SELECT tp.matching_tags_snapshot AS snapshot
FROM offers o
JOIN target_populations tp ON tp.me_file_id = o.me_file_id AND tp.target_band_id = o.target_band_id
WHERE o.id = %(offer_id)s


-- name: set_offer_snapshot_if_free :exec
-- Give an offer with a NULL snapshot the one computed for its ad event, unless a job is
-- writing that offer right now (then the job's own value lands; nothing waits).
UPDATE offers SET matching_tags_snapshot = %(snapshot)s, updated_at = now()
WHERE id = (SELECT id FROM offers
            WHERE id = %(offer_id)s AND matching_tags_snapshot IS NULL
            FOR NO KEY UPDATE SKIP LOCKED)
