-- Of the given offers or ad events ({table}), those without a snapshot that no population
-- explains: orphans, which the backfill reports (a row merely locked elsewhere is not one).
SELECT c.id, c.me_file_id, c.target_band_id
FROM {table} c
WHERE c.id = ANY(%(ids)s::bigint[]) AND c.matching_tags_snapshot IS NULL
  AND NOT EXISTS (SELECT 1 FROM target_populations tp
                  WHERE tp.target_band_id = c.target_band_id AND tp.me_file_id = c.me_file_id)
ORDER BY c.id
