-- Of a batch's MeFiles, key-share-lock those that exist (none can be deleted before the batch
-- commits) and return those that could not be: being deleted right now (their work waits).
WITH locked AS MATERIALIZED (
    SELECT id FROM me_files
    WHERE id = ANY(%(me_file_ids)s::bigint[])
    ORDER BY id
    FOR KEY SHARE SKIP LOCKED
)
SELECT id FROM me_files
WHERE id = ANY(%(me_file_ids)s::bigint[]) AND id NOT IN (SELECT id FROM locked)
