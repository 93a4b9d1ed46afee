-- Give offers or ad events ({table}) with a NULL snapshot the snapshot of their
-- (me_file, band) population. Guarded by IS NULL and SKIP LOCKED (a row being written
-- elsewhere is left to that writer or the next run); returns the rows really updated.
WITH missing AS MATERIALIZED (
    SELECT id FROM {table}
    WHERE id = ANY(%(ids)s::bigint[]) AND matching_tags_snapshot IS NULL
    ORDER BY id
    FOR UPDATE SKIP LOCKED
)
UPDATE {table} c
SET matching_tags_snapshot = tp.matching_tags_snapshot
FROM missing m, target_populations tp
WHERE c.id = m.id
  AND c.matching_tags_snapshot IS NULL
  AND tp.target_band_id = c.target_band_id AND tp.me_file_id = c.me_file_id
  AND tp.matching_tags_snapshot IS NOT NULL
RETURNING c.id
