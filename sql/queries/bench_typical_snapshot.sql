-- Benchmark: a snapshot of median size, the constant the floors write (same bytes per row).
SELECT matching_tags_snapshot AS snapshot
FROM target_populations WHERE matching_tags_snapshot IS NOT NULL
ORDER BY pg_column_size(matching_tags_snapshot)
OFFSET (SELECT count(*) / 2 FROM target_populations WHERE matching_tags_snapshot IS NOT NULL)
LIMIT 1
