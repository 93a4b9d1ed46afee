SELECT id, campaign_id, me_file_id, target_band_id, media_run_id, offer_amt, marketer_cost_amt,
       matching_tags_snapshot
FROM offers WHERE id = %(offer_id)s
FOR SHARE
