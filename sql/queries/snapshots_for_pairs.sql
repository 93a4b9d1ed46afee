-- The snapshot of each given (me_file, band) pair.
SELECT me_file_id, band_id, snapshot
FROM qlarius_matching_tags_snapshots(%(me_file_ids)s::bigint[], %(band_ids)s::bigint[])
