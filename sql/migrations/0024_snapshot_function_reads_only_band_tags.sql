-- The snapshot function, same output (byte for byte), reading less: of each MeFile's tags only
-- those whose trait is in one of the given bands (a tag of any other trait can match none of
-- them). A MeFile has ~28 tags and a band's traits take a few of them: the join of the pairs
-- with their tags was the function's largest step (4x fewer rows now). Backfill batches,
-- populate and sync all compute through it.
CREATE OR REPLACE FUNCTION qlarius_matching_tags_snapshots(me_file_ids bigint[], band_ids bigint[])
RETURNS TABLE (me_file_id bigint, band_id bigint, snapshot jsonb)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH pairs AS MATERIALIZED (
        SELECT DISTINCT p.me_file_id, p.band_id
        FROM unnest(me_file_ids, band_ids) AS p(me_file_id, band_id)
    ),
    band_traits AS MATERIALIZED (
        SELECT bt.band_id, bt.trait_id FROM qlarius_band_traits bt
        WHERE bt.band_id IN (SELECT DISTINCT pairs.band_id FROM pairs)
    ),
    tags AS MATERIALIZED (
        SELECT t.me_file_id, t.trait_id, t.tag_value
        FROM me_file_tags t
        WHERE t.me_file_id IN (SELECT DISTINCT pairs.me_file_id FROM pairs)
          AND t.trait_id IN (SELECT band_traits.trait_id FROM band_traits)
    ),
    matched AS (
        SELECT p.me_file_id, p.band_id,
               parent.id AS parent_id, parent.trait_name AS parent_name,
               parent.display_order AS parent_order,
               jsonb_agg(
                   jsonb_build_array(child.id,
                                     COALESCE(NULLIF(t.tag_value, ''), child.trait_name),
                                     child.display_order)
                   ORDER BY child.display_order, child.id
               ) AS children
        FROM pairs p
        JOIN tags t ON t.me_file_id = p.me_file_id
        JOIN band_traits bt ON bt.band_id = p.band_id AND bt.trait_id = t.trait_id
        JOIN traits child ON child.id = t.trait_id
        JOIN traits parent ON parent.id = child.parent_trait_id
        GROUP BY p.me_file_id, p.band_id, parent.id
    )
    SELECT p.me_file_id, p.band_id,
           jsonb_build_object('tags', COALESCE(
               jsonb_agg(jsonb_build_array(m.parent_id, m.parent_name, m.parent_order, m.children)
                         ORDER BY m.parent_order, m.parent_id)
                   FILTER (WHERE m.parent_id IS NOT NULL),
               '[]'::jsonb))
    FROM pairs p
    LEFT JOIN matched m ON m.me_file_id = p.me_file_id AND m.band_id = p.band_id
    GROUP BY p.me_file_id, p.band_id
$$;
