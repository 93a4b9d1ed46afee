-- A chunk adds what it really updated to its run, in the batch's own transaction.
UPDATE backfill_runs
SET updated_populations = updated_populations + %(updated_populations)s,
    updated_offers = updated_offers + %(updated_offers)s,
    updated_ad_events = updated_ad_events + %(updated_ad_events)s,
    orphan_offers = orphan_offers + %(orphan_offers)s,
    orphan_ad_events = orphan_ad_events + %(orphan_ad_events)s,
    batches = batches + %(batches)s
WHERE id = %(run_id)s
