-- What application code calls (api.py), run in the caller's transaction.

-- name: mark_target_populating :one
-- trigger_population(): remember the status to return to if populating fails for good.
UPDATE targets
SET status_before_populating = CASE WHEN population_status = 'populating'
                                    THEN status_before_populating ELSE population_status END,
    population_status = 'populating', updated_at = now()
WHERE id = %(target_id)s
RETURNING id

-- name: offer_for_ad_event :one
-- The offer an ad event copies. FOR KEY SHARE keeps it from being deleted until the event is
-- recorded; SKIP LOCKED: an offer a reconcile is deleting right now is not waited for (no
-- row; offer_exists then tells "being withdrawn" from "does not exist").
SELECT id, campaign_id, me_file_id, target_band_id, media_run_id, offer_amt, marketer_cost_amt,
       matching_tags_snapshot
FROM offers WHERE id = %(offer_id)s
FOR KEY SHARE SKIP LOCKED

-- name: offer_exists :one
SELECT EXISTS (SELECT 1 FROM offers WHERE id = %(offer_id)s) AS present

-- name: insert_ad_event :one
-- An ad event copies its offer: campaign, person, band, run and snapshot (the given snapshot
-- when the offer has none yet).
INSERT INTO ad_events (offer_id, campaign_id, me_file_id, target_band_id, media_run_id,
                       offer_amt, marketer_cost_amt, is_offer_complete, matching_tags_snapshot)
SELECT o.id, o.campaign_id, o.me_file_id, o.target_band_id, o.media_run_id,
       COALESCE(%(offer_amt)s, o.offer_amt), COALESCE(%(marketer_cost_amt)s, o.marketer_cost_amt),
       %(is_offer_complete)s, COALESCE(o.matching_tags_snapshot, %(snapshot)s)
FROM offers o WHERE o.id = %(offer_id)s
RETURNING id, matching_tags_snapshot
