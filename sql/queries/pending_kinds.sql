-- Which drains have pending work that could be taken now (the wake-up sweep; no locks).
SELECT
    EXISTS (SELECT 1 FROM qlarius_pending_syncs
            WHERE retry_after IS NULL OR retry_after <= now()) AS sync,
    EXISTS (SELECT 1 FROM qlarius_pending_reconciles
            WHERE retry_after IS NULL OR retry_after <= now()) AS reconcile
