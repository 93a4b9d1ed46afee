-- Of the given offers or ad events ({table}), those still without a snapshot.
SELECT id, me_file_id, target_band_id
FROM {table}
WHERE id = ANY(%(ids)s::bigint[]) AND matching_tags_snapshot IS NULL
ORDER BY id
