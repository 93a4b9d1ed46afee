-- A population change asks for a reconcile of its MeFile's offers in ONE target: the target of
-- the population's band (only that target's campaigns can offer on it; qlarius_eligible_offers
-- joins the band to the campaign's target). The pending reconcile row now names that target
-- instead of "every target" (NULL), so that a populate can settle its own target's offers in
-- one set-based pass right after its populations commit, taking exactly those rows (see
-- populations.py, offers.settle_target_offers): a full re-populate no longer leaves a million
-- single-MeFile reconciles behind. Rows it cannot take (its pass crashed, a campaign of the
-- target being deleted) are applied by the reconcile drain as before: a (me_file, target) row
-- is taken once its target's offers scope is free (drains.sql claim_pending).
--
-- A band that is gone by the time the trigger runs (a cascaded delete) names no target: the
-- row falls back to NULL, every target, as before.
CREATE OR REPLACE FUNCTION qlarius_record_population_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO qlarius_pending_reconciles (me_file_id, target_id)
        SELECT DISTINCT n.me_file_id, tb.target_id
        FROM new_rows n LEFT JOIN target_bands tb ON tb.id = n.target_band_id
        WHERE EXISTS (SELECT 1 FROM bids b WHERE b.target_band_id = n.target_band_id);
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO qlarius_pending_reconciles (me_file_id, target_id)
        SELECT DISTINCT o.me_file_id, tb.target_id
        FROM old_rows o LEFT JOIN target_bands tb ON tb.id = o.target_band_id
        WHERE EXISTS (SELECT 1 FROM bids b WHERE b.target_band_id = o.target_band_id);
    ELSE
        INSERT INTO qlarius_pending_reconciles (me_file_id, target_id)
        SELECT DISTINCT x.me_file_id, tb.target_id
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        CROSS JOIN LATERAL (VALUES (n.me_file_id, n.target_band_id),
                                   (o.me_file_id, o.target_band_id)) x(me_file_id, band_id)
        LEFT JOIN target_bands tb ON tb.id = x.band_id
        WHERE (n.matching_tags_snapshot IS DISTINCT FROM o.matching_tags_snapshot
               OR n.target_band_id <> o.target_band_id OR n.me_file_id <> o.me_file_id)
          AND EXISTS (SELECT 1 FROM bids b
                      WHERE b.target_band_id IN (n.target_band_id, o.target_band_id));
    END IF;
    RETURN NULL;
END;
$$;
