-- The run's own counts (inline batches) are added: chunks may already have added theirs.
UPDATE backfill_runs
SET finished_at = now(),
    updated_populations = updated_populations + %(updated_populations)s,
    updated_offers = updated_offers + %(updated_offers)s,
    updated_ad_events = updated_ad_events + %(updated_ad_events)s,
    orphan_offers = orphan_offers + %(orphan_offers)s,
    orphan_ad_events = orphan_ad_events + %(orphan_ad_events)s,
    batches = batches + %(batches)s,
    chunks_deferred = %(chunks_deferred)s,
    budget_exhausted = %(budget_exhausted)s, elapsed_ms = %(elapsed_ms)s,
    audited_me_files = %(audited_me_files)s,
    drifted_populations = %(drifted_population)s,
    stale_snapshots = %(stale_snapshot)s,
    offers_without_eligibility = %(offer_without_eligibility)s,
    eligible_without_offer = %(eligible_without_offer)s,
    stale_offer_snapshots = %(stale_offer_snapshot)s
WHERE id = %(run_id)s
