-- Benchmark: make the remembered rows of {table} NULL again.
UPDATE {table} t SET matching_tags_snapshot = NULL FROM {saved} s WHERE t.id = s.id
