-- Give offers or ad events ({table}) with a NULL snapshot the snapshot of their
-- (me_file, band) population. Guarded by IS NULL; returns the rows really updated.
UPDATE {table} c
SET matching_tags_snapshot = tp.matching_tags_snapshot
FROM target_populations tp
WHERE c.id = ANY(%(ids)s::bigint[])
  AND c.matching_tags_snapshot IS NULL
  AND tp.target_band_id = c.target_band_id AND tp.me_file_id = c.me_file_id
  AND tp.matching_tags_snapshot IS NOT NULL
RETURNING c.id
