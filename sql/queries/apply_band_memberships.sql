-- Bring the populations of the given targets (for all MeFiles, or only the given ones) in line
-- with band matching, in one statement: delete the rows that no longer hold, insert the
-- missing ones with their snapshots, and refresh the snapshot of kept rows whose tags changed.
-- Populating (one target, every MeFile) and syncing (one MeFile, every populated target)
-- both run this, so they always agree.
WITH wanted AS (
    SELECT m.me_file_id, m.band_id
    FROM qlarius_band_memberships m
    WHERE m.target_id = ANY(%(target_ids)s::bigint[])
      AND (%(me_file_ids)s::bigint[] IS NULL OR m.me_file_id = ANY(%(me_file_ids)s::bigint[]))
),
current_rows AS (
    SELECT tp.id, tp.me_file_id, tp.target_band_id AS band_id, tp.matching_tags_snapshot
    FROM target_populations tp
    JOIN target_bands b ON b.id = tp.target_band_id
    WHERE b.target_id = ANY(%(target_ids)s::bigint[])
      AND (%(me_file_ids)s::bigint[] IS NULL OR tp.me_file_id = ANY(%(me_file_ids)s::bigint[]))
),
deleted AS (
    DELETE FROM target_populations tp
    USING current_rows c
    WHERE tp.id = c.id
      AND NOT EXISTS (
          SELECT 1 FROM wanted w WHERE w.me_file_id = c.me_file_id AND w.band_id = c.band_id)
    RETURNING tp.me_file_id
),
pairs AS (
    SELECT array_agg(me_file_id) AS me_file_ids, array_agg(band_id) AS band_ids FROM wanted
),
snapshots AS (
    SELECT s.me_file_id, s.band_id, s.snapshot
    FROM pairs, qlarius_matching_tags_snapshots(pairs.me_file_ids, pairs.band_ids) s
),
inserted AS (
    INSERT INTO target_populations (target_band_id, me_file_id, matching_tags_snapshot)
    SELECT s.band_id, s.me_file_id, s.snapshot
    FROM snapshots s
    WHERE NOT EXISTS (
        SELECT 1 FROM current_rows c WHERE c.me_file_id = s.me_file_id AND c.band_id = s.band_id)
    ON CONFLICT (target_band_id, me_file_id) DO NOTHING
    RETURNING me_file_id
),
refreshed AS (
    UPDATE target_populations tp
    SET matching_tags_snapshot = s.snapshot, updated_at = now()
    FROM current_rows c
    JOIN snapshots s ON s.me_file_id = c.me_file_id AND s.band_id = c.band_id
    WHERE tp.id = c.id AND c.matching_tags_snapshot IS DISTINCT FROM s.snapshot
    RETURNING tp.me_file_id
)
SELECT
    (SELECT count(*) FROM deleted) AS deleted,
    (SELECT count(*) FROM inserted) AS inserted,
    (SELECT count(*) FROM refreshed) AS refreshed,
    (SELECT count(*) FROM wanted) AS members
