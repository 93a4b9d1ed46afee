-- Create the missing offers of one campaign or one MeFile, each copying its population's
-- snapshot (filled beforehand). Existing offers are left alone.
INSERT INTO offers (campaign_id, me_file_id, media_run_id, target_band_id, offer_amt,
                    marketer_cost_amt, pending_until, is_current, matching_tags_snapshot)
SELECT e.campaign_id, e.me_file_id, e.media_run_id, e.target_band_id, e.offer_amt,
       e.marketer_cost_amt, now() + make_interval(secs => %(pending_seconds)s), true,
       e.matching_tags_snapshot
FROM qlarius_eligible_offers e
WHERE (%(campaign_id)s::bigint IS NULL OR e.campaign_id = %(campaign_id)s::bigint)
  AND (%(me_file_id)s::bigint IS NULL OR e.me_file_id = %(me_file_id)s::bigint)
  AND e.matching_tags_snapshot IS NOT NULL
ON CONFLICT (campaign_id, me_file_id, media_run_id) DO NOTHING
