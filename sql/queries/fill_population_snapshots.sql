-- Fill the NULL snapshots of the given populations. Guarded: a row that got a snapshot in the
-- meantime (another job, a rerun) is re-checked after its lock and left alone.
WITH missing AS (
    SELECT id, me_file_id, target_band_id
    FROM target_populations
    WHERE id = ANY(%(population_ids)s::bigint[]) AND matching_tags_snapshot IS NULL
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
