-- The offers (of the given MeFiles, or of one campaign, in free targets) that no longer match
-- an eligible (campaign, band, first media run), each locked for deletion in id order without
-- waiting: one locked elsewhere (the application recording an ad event on it) is returned
-- with locked = false, and its MeFile left for a later batch. Only offers to delete are
-- locked: the others stay free for the application (a refresh takes a weaker lock).
WITH ineligible AS MATERIALIZED (
    SELECT o.id, o.me_file_id
    FROM offers o
    JOIN campaigns c ON c.id = o.campaign_id
    WHERE c.target_id = ANY(%(free_targets)s::bigint[])
      AND (%(me_file_ids)s::bigint[] IS NULL OR o.me_file_id = ANY(%(me_file_ids)s::bigint[]))
      AND (%(campaign_id)s::bigint IS NULL OR o.campaign_id = %(campaign_id)s::bigint)
      AND NOT EXISTS (
          SELECT 1 FROM qlarius_eligible_offers e
          WHERE e.me_file_id = o.me_file_id AND e.campaign_id = o.campaign_id
            AND e.target_band_id = o.target_band_id AND e.media_run_id = o.media_run_id)
),
locked AS MATERIALIZED (
    SELECT o.id FROM offers o
    WHERE o.id IN (SELECT id FROM ineligible)
    ORDER BY o.id
    FOR UPDATE SKIP LOCKED
)
SELECT i.id, i.me_file_id, EXISTS (SELECT 1 FROM locked l WHERE l.id = i.id) AS locked
FROM ineligible i
ORDER BY i.id
