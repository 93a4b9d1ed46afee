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
