-- The snapshot of the population behind an offer (NULL: none, or not computed yet). Read only:
-- the application never writes populations (a job writing one never waits for it).
SELECT tp.matching_tags_snapshot AS snapshot
FROM offers o
JOIN target_populations tp ON tp.me_file_id = o.me_file_id AND tp.target_band_id = o.target_band_id
WHERE o.id = %(offer_id)s
