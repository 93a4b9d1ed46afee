-- The next batch of {table} rows with a NULL snapshot, by keyset over the partial index,
-- up to last_id when given (a chunk's range).
SELECT id FROM {table}
WHERE matching_tags_snapshot IS NULL AND id > %(after_id)s
  AND (%(last_id)s::bigint IS NULL OR id <= %(last_id)s::bigint)
ORDER BY id
LIMIT %(batch_size)s
