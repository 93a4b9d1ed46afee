-- Create the missing eligible offers (of the given MeFiles or one campaign, in free targets),
-- each copying its population's snapshot, and bring the snapshot of existing ones in line
-- with their population's. Runs after delete_ineligible_offers in the same transaction, so a
-- MeFile that moved band gets its new offer. Returns one row per offer created or refreshed.
INSERT INTO offers (campaign_id, me_file_id, media_run_id, target_band_id, offer_amt,
                    marketer_cost_amt, pending_until, is_current, matching_tags_snapshot)
SELECT DISTINCT ON (e.campaign_id, e.me_file_id, e.media_run_id)
       e.campaign_id, e.me_file_id, e.media_run_id, e.target_band_id, e.offer_amt,
       e.marketer_cost_amt, now() + make_interval(secs => %(pending_seconds)s), true,
       e.matching_tags_snapshot
FROM qlarius_eligible_offers e
WHERE e.target_id = ANY(%(free_targets)s::bigint[])
  AND (%(me_file_ids)s::bigint[] IS NULL OR e.me_file_id = ANY(%(me_file_ids)s::bigint[]))
  AND (%(campaign_id)s::bigint IS NULL OR e.campaign_id = %(campaign_id)s::bigint)
  AND e.me_file_id <> ALL(%(blocked)s::bigint[])
  AND e.matching_tags_snapshot IS NOT NULL
ORDER BY e.campaign_id, e.me_file_id, e.media_run_id, e.target_band_id
ON CONFLICT (campaign_id, me_file_id, media_run_id) DO UPDATE
SET matching_tags_snapshot = EXCLUDED.matching_tags_snapshot, updated_at = now()
WHERE offers.target_band_id = EXCLUDED.target_band_id
  AND offers.matching_tags_snapshot IS DISTINCT FROM EXCLUDED.matching_tags_snapshot
RETURNING (xmax = 0) AS created
