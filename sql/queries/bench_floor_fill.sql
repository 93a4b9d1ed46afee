-- Benchmark floor: one plain UPDATE writing a constant snapshot to every NULL row of {table}.
UPDATE {table} SET matching_tags_snapshot = %(snapshot)s WHERE matching_tags_snapshot IS NULL
