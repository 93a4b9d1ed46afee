-- Benchmark: give many MeFiles a new answer that some target looks for, as the app would.
WITH picked AS (
    SELECT m.id AS me_file_id,
           (SELECT tgt.trait_id FROM trait_group_traits tgt
            ORDER BY random() + m.id * 0 LIMIT 1) AS trait_id
    FROM me_files m ORDER BY random() LIMIT %(count)s
)
INSERT INTO me_file_tags (me_file_id, trait_id)
SELECT me_file_id, trait_id FROM picked
ON CONFLICT (me_file_id, trait_id) DO UPDATE SET updated_at = now()
RETURNING me_file_id
