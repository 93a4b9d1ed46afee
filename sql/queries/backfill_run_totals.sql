SELECT id, found_populations, found_offers, found_ad_events, updated_populations,
       updated_offers, updated_ad_events, orphan_offers, orphan_ad_events, batches,
       chunks_deferred, chunks_failed, elapsed_ms
FROM backfill_runs WHERE id = %(run_id)s
