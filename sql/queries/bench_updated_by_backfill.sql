SELECT COALESCE(sum(updated_populations + updated_offers + updated_ad_events), 0)::bigint AS rows
FROM backfill_runs
