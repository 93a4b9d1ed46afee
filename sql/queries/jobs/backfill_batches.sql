-- The backfill's batches (backfill_batches.py): find the next NULL rows, add their counts.

-- name: next_missing_snapshot_ids :many
-- The next batch of {table} rows with a NULL snapshot, by keyset over the partial index,
-- up to last_id when given (a chunk's range).
SELECT id FROM {table}
WHERE matching_tags_snapshot IS NULL AND id > %(after_id)s
  AND (%(last_id)s::bigint IS NULL OR id <= %(last_id)s::bigint)
ORDER BY id
LIMIT %(batch_size)s

-- name: add_backfill_run_counts :exec
-- A batch adds what it really updated to its run, in the batch's own transaction; a chunk's
-- batch also records how far the chunk got (first_id given), in the same statement.
WITH progress AS (
    UPDATE qlarius_backfill_chunks SET done_through = %(done_through)s
    WHERE %(first_id)s::bigint IS NOT NULL
      AND run_id = %(run_id)s AND table_name = %(table_name)s AND first_id = %(first_id)s
)
UPDATE backfill_runs
SET updated_populations = updated_populations + %(updated_populations)s,
    updated_offers = updated_offers + %(updated_offers)s,
    updated_ad_events = updated_ad_events + %(updated_ad_events)s,
    orphan_offers = orphan_offers + %(orphan_offers)s,
    orphan_ad_events = orphan_ad_events + %(orphan_ad_events)s,
    batches = batches + %(batches)s
WHERE id = %(run_id)s

-- name: chunk_done_through :one
-- Where a chunk resumes (NULL: from its first id).
SELECT done_through FROM qlarius_backfill_chunks
WHERE run_id = %(run_id)s AND table_name = %(table_name)s AND first_id = %(first_id)s
