-- Insert population rows with their snapshots in the same statement. Idempotent.
INSERT INTO target_populations (target_band_id, me_file_id, matching_tags_snapshot)
SELECT s.band_id, s.me_file_id, s.snapshot
FROM qlarius_matching_tags_snapshots(%(me_file_ids)s::bigint[], %(band_ids)s::bigint[]) s
ON CONFLICT (target_band_id, me_file_id) DO NOTHING
