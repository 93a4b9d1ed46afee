-- A run's row; the run itself is its first pending part (its chunks are the others): whoever
-- ends last finishes it. A retry of the same job continues the same row.
INSERT INTO backfill_runs (job_id, found_populations, found_offers, found_ad_events,
                           chunks_pending)
VALUES (%(job_id)s, %(found_populations)s, %(found_offers)s, %(found_ad_events)s, 1)
ON CONFLICT (job_id) WHERE job_id IS NOT NULL DO UPDATE SET job_id = EXCLUDED.job_id
RETURNING id, xmax <> 0 AS continued
