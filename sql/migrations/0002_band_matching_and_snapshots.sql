-- Band matching and matching-tag snapshots: the one place where these rules live.
-- Populating, syncing, offers, ad events and the backfill all go through these objects.

-- For each band, the child traits that satisfy it: the union of its groups' traits.
-- (Two groups over the same parent simply contribute to the same parent entry.)
CREATE VIEW qlarius_band_traits AS
SELECT DISTINCT tbtg.target_band_id AS band_id, tgt.trait_id
FROM target_band_trait_groups tbtg
JOIN trait_group_traits tgt ON tgt.trait_group_id = tbtg.trait_group_id;

-- How many of its band's groups each MeFile satisfies (OR inside a group: one tag is
-- enough). Filters on target_id / me_file_id push down into the grouping.
CREATE VIEW qlarius_band_group_hits AS
WITH band_sizes AS (
    SELECT b.id AS band_id, b.target_id, count(tbtg.trait_group_id) AS groups_needed
    FROM target_bands b
    JOIN target_band_trait_groups tbtg ON tbtg.target_band_id = b.id
    GROUP BY b.id, b.target_id
)
SELECT bs.target_id, t.me_file_id, bs.band_id, bs.groups_needed,
       count(DISTINCT tbtg.trait_group_id) AS groups_hit
FROM band_sizes bs
JOIN target_band_trait_groups tbtg ON tbtg.target_band_id = bs.band_id
JOIN trait_group_traits tgt ON tgt.trait_group_id = tbtg.trait_group_id
JOIN me_file_tags t ON t.trait_id = tgt.trait_id
GROUP BY bs.target_id, t.me_file_id, bs.band_id, bs.groups_needed;

-- The band each MeFile belongs to in each target: AND across the band's groups, and of the
-- bands it matches the innermost one (most groups), ties to the lowest band id. A band with
-- no groups never appears (band_sizes needs a group); an empty group can never be hit.
CREATE VIEW qlarius_band_memberships AS
SELECT DISTINCT ON (h.target_id, h.me_file_id) h.target_id, h.me_file_id, h.band_id
FROM qlarius_band_group_hits h
WHERE h.groups_hit = h.groups_needed
ORDER BY h.target_id, h.me_file_id, h.groups_needed DESC, h.band_id;

-- The matching-tag snapshot of each (me_file, band) pair given, as DOMAIN.md defines it:
--   {"tags": [[parent_id, parent_name, parent_order, [[child_id, value, child_order], ...]], ...]}
-- Only tags whose trait is in one of the band's groups; parents and children ordered by
-- (display_order, id); the value is tag_value, or the child's name when that is NULL or
-- empty. Every pair given gets exactly one row, '{"tags": []}' when nothing matches: never
-- NULL. Pairs are zipped from the two arrays (which must have the same length).
CREATE FUNCTION qlarius_matching_tags_snapshots(me_file_ids bigint[], band_ids bigint[])
RETURNS TABLE (me_file_id bigint, band_id bigint, snapshot jsonb)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH pairs AS (
        SELECT DISTINCT p.me_file_id, p.band_id
        FROM unnest(me_file_ids, band_ids) AS p(me_file_id, band_id)
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
        JOIN qlarius_band_traits bt ON bt.band_id = p.band_id
        JOIN me_file_tags t ON t.me_file_id = p.me_file_id AND t.trait_id = bt.trait_id
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
