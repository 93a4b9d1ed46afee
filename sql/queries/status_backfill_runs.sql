SELECT started_at, found_populations AS found_pop, found_offers, found_ad_events AS found_events,
       updated_populations AS upd_pop, updated_offers AS upd_offers,
       updated_ad_events AS upd_events, orphan_offers + orphan_ad_events AS orphans,
       budget_exhausted AS out_of_time, elapsed_ms
FROM qlarius_backfill_history LIMIT %(limit)s
