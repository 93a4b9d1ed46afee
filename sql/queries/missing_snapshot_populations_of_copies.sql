-- Populations with a NULL snapshot behind the given offers or ad events ({table}) that have none.
SELECT DISTINCT tp.id
FROM {table} c
JOIN target_populations tp
  ON tp.target_band_id = c.target_band_id AND tp.me_file_id = c.me_file_id
WHERE c.id = ANY(%(ids)s::bigint[])
  AND c.matching_tags_snapshot IS NULL
  AND tp.matching_tags_snapshot IS NULL
