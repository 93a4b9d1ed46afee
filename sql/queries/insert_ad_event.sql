-- An ad event copies its offer: campaign, person, band, run and snapshot (the given snapshot
-- when the offer has none yet).
INSERT INTO ad_events (offer_id, campaign_id, me_file_id, target_band_id, media_run_id,
                       offer_amt, marketer_cost_amt, is_offer_complete, matching_tags_snapshot)
SELECT o.id, o.campaign_id, o.me_file_id, o.target_band_id, o.media_run_id,
       COALESCE(%(offer_amt)s, o.offer_amt), COALESCE(%(marketer_cost_amt)s, o.marketer_cost_amt),
       %(is_offer_complete)s, COALESCE(o.matching_tags_snapshot, %(snapshot)s)
FROM offers o WHERE o.id = %(offer_id)s
RETURNING id, matching_tags_snapshot
