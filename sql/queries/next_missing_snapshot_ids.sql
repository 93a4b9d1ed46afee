-- The next batch of {table} rows with a NULL snapshot, by keyset over the partial index.
SELECT id FROM {table}
WHERE matching_tags_snapshot IS NULL AND id > %(after_id)s
ORDER BY id
LIMIT %(batch_size)s
