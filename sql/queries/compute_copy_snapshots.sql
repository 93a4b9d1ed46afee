-- Offers or ad events ({table}) still without a snapshot although a population explains them
-- (its own snapshot being written by another job right now): computed from the tags, as the
-- population's is. Guarded by IS NULL and SKIP LOCKED; returns the rows updated.
WITH missing AS MATERIALIZED (
    SELECT c.id, c.me_file_id, c.target_band_id
    FROM {table} c
    WHERE c.id = ANY(%(ids)s::bigint[]) AND c.matching_tags_snapshot IS NULL
      AND EXISTS (SELECT 1 FROM target_populations tp
                  WHERE tp.me_file_id = c.me_file_id AND tp.target_band_id = c.target_band_id)
    ORDER BY c.id
    FOR UPDATE OF c SKIP LOCKED
),
pairs AS (
    SELECT array_agg(me_file_id) AS me_file_ids, array_agg(target_band_id) AS band_ids
    FROM missing
)
UPDATE {table} c
SET matching_tags_snapshot = s.snapshot
FROM missing m, pairs, qlarius_matching_tags_snapshots(pairs.me_file_ids, pairs.band_ids) s
WHERE c.id = m.id AND s.me_file_id = m.me_file_id AND s.band_id = m.target_band_id
  AND c.matching_tags_snapshot IS NULL
RETURNING c.id
