-- The seed note's health check: rows whose snapshot was never computed (partial indexes).
SELECT
    (SELECT count(*) FROM target_populations WHERE matching_tags_snapshot IS NULL) AS target_populations,
    (SELECT count(*) FROM offers WHERE matching_tags_snapshot IS NULL) AS offers,
    (SELECT count(*) FROM ad_events WHERE matching_tags_snapshot IS NULL) AS ad_events
