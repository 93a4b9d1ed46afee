-- Benchmark: remember which rows of {table} have a NULL snapshot, to reset them between runs.
CREATE TABLE IF NOT EXISTS {saved} AS
SELECT id FROM {table} WHERE matching_tags_snapshot IS NULL
