-- Benchmark, the old way: one query per row to read the tags that satisfy its band.
SELECT parent.id AS parent_id, parent.trait_name AS parent_name,
       parent.display_order AS parent_order, child.id AS child_id,
       COALESCE(NULLIF(t.tag_value, ''), child.trait_name) AS value,
       child.display_order AS child_order
FROM me_file_tags t
JOIN traits child ON child.id = t.trait_id
JOIN traits parent ON parent.id = child.parent_trait_id
WHERE t.me_file_id = %(me_file_id)s
  AND t.trait_id IN (SELECT trait_id FROM qlarius_band_traits WHERE band_id = %(band_id)s)
