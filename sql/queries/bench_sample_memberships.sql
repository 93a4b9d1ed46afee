SELECT me_file_id, band_id FROM qlarius_band_memberships
WHERE target_id = ANY(%(target_ids)s::bigint[]) ORDER BY me_file_id LIMIT %(sample)s
