-- A populate settles its target's offers (target_offers.py).

-- name: take_pending_reconciles_of_target :count
-- The pending reconciles that name this target (population changes in its bands, recorded by
-- the populate that just committed, by syncs since, or left for it by reconcile batches while
-- it was busy), consumed by the pass that is about to reconcile every offer of the target's
-- campaigns, in its transaction, after taking the target's offers scope and before it reads:
-- a change committed later leaves its row for the drain. Rows about every target (NULL) stay:
-- their other targets are not this pass's.
DELETE FROM qlarius_pending_reconciles WHERE target_id = %(target_id)s
