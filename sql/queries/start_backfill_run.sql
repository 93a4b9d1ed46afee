INSERT INTO backfill_runs (job_id, found_populations, found_offers, found_ad_events)
VALUES (%(job_id)s, %(found_populations)s, %(found_offers)s, %(found_ad_events)s)
RETURNING id
