-- The innermost band of each MeFile in the given targets (all MeFiles when me_file_ids is NULL).
SELECT target_id, me_file_id, band_id
FROM qlarius_band_memberships
WHERE target_id = ANY(%(target_ids)s::bigint[])
  AND (%(me_file_ids)s::bigint[] IS NULL OR me_file_id = ANY(%(me_file_ids)s::bigint[]))
ORDER BY target_id, me_file_id
