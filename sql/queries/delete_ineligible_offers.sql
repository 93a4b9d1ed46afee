-- Delete the offers (of the given MeFiles or one campaign, in free targets) that no longer
-- match an eligible (campaign, band, first media run). One statement, any number of rows.
DELETE FROM offers o
USING campaigns c
WHERE c.id = o.campaign_id
  AND c.target_id = ANY(%(free_targets)s::bigint[])
  AND (%(me_file_ids)s::bigint[] IS NULL OR o.me_file_id = ANY(%(me_file_ids)s::bigint[]))
  AND (%(campaign_id)s::bigint IS NULL OR o.campaign_id = %(campaign_id)s::bigint)
  AND o.me_file_id <> ALL(%(blocked)s::bigint[])
  AND NOT EXISTS (
      SELECT 1 FROM qlarius_eligible_offers e
      WHERE e.me_file_id = o.me_file_id AND e.campaign_id = o.campaign_id
        AND e.target_band_id = o.target_band_id AND e.media_run_id = o.media_run_id)
