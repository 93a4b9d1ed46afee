-- The next batch of one band's populations with a NULL snapshot, by keyset on id.
SELECT id FROM target_populations
WHERE target_band_id = %(band_id)s AND matching_tags_snapshot IS NULL AND id > %(after_id)s
ORDER BY id
LIMIT %(batch_size)s
