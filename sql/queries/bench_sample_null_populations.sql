-- Benchmark: the row-by-row way's sample.
SELECT id, me_file_id, target_band_id FROM target_populations
WHERE matching_tags_snapshot IS NULL ORDER BY id LIMIT %(sample)s
