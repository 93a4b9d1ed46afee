-- The run's own part ends (every batch, its own and its chunks', added its counts as it
-- committed). The last part to end (this one, or its last chunk) finishes the run.
UPDATE backfill_runs
SET chunks_pending = chunks_pending - 1,
    finished_at = CASE WHEN chunks_pending = 1 THEN now() END,
    elapsed_ms = CASE WHEN chunks_pending = 1
                      THEN (extract(epoch FROM now() - started_at) * 1000)::bigint END,
    budget_exhausted = %(budget_exhausted)s,
    audited_me_files = %(audited_me_files)s,
    drifted_populations = %(drifted_population)s,
    stale_snapshots = %(stale_snapshot)s,
    offers_without_eligibility = %(offer_without_eligibility)s,
    eligible_without_offer = %(eligible_without_offer)s,
    stale_offer_snapshots = %(stale_offer_snapshot)s
WHERE id = %(run_id)s
RETURNING chunks_pending = 0 AS run_finished
