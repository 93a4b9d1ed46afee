-- The offer an ad event copies. FOR KEY SHARE keeps it from being deleted until the event is
-- recorded; SKIP LOCKED: an offer a reconcile is deleting right now is not waited for (no
-- row; offer_exists then tells "being withdrawn" from "does not exist").
SELECT id, campaign_id, me_file_id, target_band_id, media_run_id, offer_amt, marketer_cost_amt,
       matching_tags_snapshot
FROM offers WHERE id = %(offer_id)s
FOR KEY SHARE SKIP LOCKED
