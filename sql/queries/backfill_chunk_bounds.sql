-- Split the NULL-snapshot rows of {table} into id ranges of at most chunk_size rows each.
SELECT min(id) AS first_id, max(id) AS last_id, count(*) AS rows
FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / %(chunk_size)s AS chunk
      FROM {table} WHERE matching_tags_snapshot IS NULL) numbered
GROUP BY chunk
ORDER BY first_id
