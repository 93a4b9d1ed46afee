-- A run shares out chunks of {table}: they are pending until each ends.
WITH chunks AS (
    INSERT INTO qlarius_backfill_chunks (run_id, table_name, first_id)
    SELECT %(run_id)s, %(table_name)s, unnest(%(first_ids)s::bigint[])
    ON CONFLICT DO NOTHING
    RETURNING 1
)
UPDATE backfill_runs
SET chunks_pending = chunks_pending + (SELECT count(*) FROM chunks),
    chunks_deferred = chunks_deferred + (SELECT count(*) FROM chunks)
WHERE id = %(run_id)s
