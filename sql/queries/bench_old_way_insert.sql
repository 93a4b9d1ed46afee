-- Benchmark, the old way: one insert per population row.
INSERT INTO target_populations (target_band_id, me_file_id, matching_tags_snapshot)
VALUES (%(band_id)s, %(me_file_id)s, %(snapshot)s)
ON CONFLICT (target_band_id, me_file_id) DO NOTHING
