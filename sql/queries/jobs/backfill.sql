-- The hourly safety net (backfill.py): runs, chunks, and the NULL snapshots they fill.

-- name: null_snapshot_counts :one
-- The seed note's health check (the view lives in sql/monitoring.sql).
SELECT target_populations, offers, ad_events FROM qlarius_null_snapshot_counts

-- name: pending_backfill_chunks :many
-- Tables with chunk jobs (of any run) still waiting or running: their rows are taken care of.
SELECT DISTINCT args ->> 'table' AS table_name FROM procrastinate_jobs
WHERE task_name = 'backfill_snapshot_chunk' AND status IN ('todo', 'doing')

-- name: start_backfill_run :one
-- A run's row; the run itself is its first pending part (its chunks are the others): whoever
-- ends last finishes it. A retry of the same job continues the same row.
INSERT INTO backfill_runs (job_id, found_populations, found_offers, found_ad_events,
                           chunks_pending)
VALUES (%(job_id)s, %(found_populations)s, %(found_offers)s, %(found_ad_events)s, 1)
ON CONFLICT (job_id) WHERE job_id IS NOT NULL DO UPDATE SET job_id = EXCLUDED.job_id
RETURNING id, xmax <> 0 AS continued

-- name: backfill_chunk_bounds :many
-- Split the NULL-snapshot rows of {table} into id ranges of at most chunk_size rows each.
SELECT min(id) AS first_id, max(id) AS last_id, count(*) AS rows
FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / %(chunk_size)s AS chunk
      FROM {table} WHERE matching_tags_snapshot IS NULL) numbered
GROUP BY chunk
ORDER BY first_id

-- name: register_backfill_chunks :exec
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

-- name: finish_backfill_run :one
-- The run's own part ends (every batch, its own and its chunks', added its counts as it
-- committed), once: a retry of a job whose part already ended changes nothing (no row). The
-- last part to end (this one, or its last chunk) finishes the run.
UPDATE backfill_runs
SET chunks_pending = chunks_pending - 1,
    own_part_ended = true,
    finished_at = CASE WHEN chunks_pending = 1 THEN now() ELSE finished_at END,
    elapsed_ms = CASE WHEN chunks_pending = 1
                      THEN (extract(epoch FROM now() - started_at) * 1000)::bigint
                      ELSE elapsed_ms END,
    budget_exhausted = %(budget_exhausted)s,
    phase_ms = qlarius_add_phase_ms(phase_ms, %(phase_ms)s),
    audited_me_files = %(audited_me_files)s,
    drifted_populations = %(drifted_population)s,
    stale_snapshots = %(stale_snapshot)s,
    offers_without_eligibility = %(offer_without_eligibility)s,
    eligible_without_offer = %(eligible_without_offer)s,
    stale_offer_snapshots = %(stale_offer_snapshot)s,
    stale_offer_amounts = %(stale_offer_amount)s,
    offers_of_campaigns_not_live = %(offer_of_a_campaign_not_live)s
WHERE id = %(run_id)s AND NOT own_part_ended
RETURNING chunks_pending = 0 AS run_finished

-- name: chunk_ended :one
-- A chunk succeeded; true when it was its run's last.
SELECT run_finished FROM qlarius_end_backfill_chunk(%(run_id)s, %(table_name)s, %(first_id)s, false)

-- name: backfill_run_totals :one
SELECT id, found_populations, found_offers, found_ad_events, updated_populations,
       updated_offers, updated_ad_events, orphan_offers, orphan_ad_events, batches,
       chunks_deferred, chunks_failed, elapsed_ms, phase_ms
FROM backfill_runs WHERE id = %(run_id)s

-- name: add_backfill_phases :exec
-- A chunk adds where its time went to its run (before it ends, in the same transaction).
UPDATE backfill_runs SET phase_ms = qlarius_add_phase_ms(phase_ms, %(phase_ms)s)
WHERE id = %(run_id)s
