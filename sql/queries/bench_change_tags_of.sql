-- Benchmark: give the given MeFiles another answer that some target looks for (the same kind
-- of change as bench_change_tags, for the floor to redo the same work).
INSERT INTO me_file_tags (me_file_id, trait_id)
SELECT m.id, (SELECT tgt.trait_id FROM trait_group_traits tgt ORDER BY random() + m.id * 0 LIMIT 1)
FROM unnest(%(me_file_ids)s::bigint[]) m(id)
ON CONFLICT (me_file_id, trait_id) DO UPDATE SET tag_value = 'again', updated_at = now()
