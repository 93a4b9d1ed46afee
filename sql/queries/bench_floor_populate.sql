-- Benchmark floor: one INSERT ... SELECT of the same pairs, with a constant snapshot.
INSERT INTO target_populations (target_band_id, me_file_id, matching_tags_snapshot)
SELECT band_id, me_file_id, %(snapshot)s FROM qlarius_band_memberships
WHERE target_id = ANY(%(target_ids)s::bigint[])
