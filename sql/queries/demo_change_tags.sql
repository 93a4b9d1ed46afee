-- Demo: some MeFiles answer one more question, with an answer some target looks for (their
-- tags change, as the application would write them).
WITH picked AS (
    SELECT m.id AS me_file_id,
           (SELECT tgt.trait_id FROM trait_group_traits tgt
            ORDER BY random() + m.id * 0 LIMIT 1) AS trait_id
    FROM me_files m
    ORDER BY random()
    LIMIT %(count)s
),
added AS (
    INSERT INTO me_file_tags (me_file_id, trait_id)
    SELECT me_file_id, trait_id FROM picked
    ON CONFLICT (me_file_id, trait_id) DO NOTHING
    RETURNING me_file_id
)
SELECT DISTINCT me_file_id FROM added ORDER BY me_file_id
