-- Benchmark, the old way: one update per row.
UPDATE target_populations SET matching_tags_snapshot = %(snapshot)s
WHERE id = %(id)s AND matching_tags_snapshot IS NULL
