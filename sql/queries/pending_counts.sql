-- Pending syncs and reconciles, and the age of the oldest of each.
SELECT
    (SELECT count(*) FROM qlarius_pending_syncs) AS pending_syncs,
    (SELECT extract(epoch FROM clock_timestamp() - min(recorded_at)) FROM qlarius_pending_syncs)
        AS oldest_sync_s,
    (SELECT count(*) FROM qlarius_pending_reconciles) AS pending_reconciles,
    (SELECT extract(epoch FROM clock_timestamp() - min(recorded_at)) FROM qlarius_pending_reconciles)
        AS oldest_reconcile_s
