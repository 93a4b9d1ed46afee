SELECT target_populations + offers + ad_events AS total FROM qlarius_null_snapshot_counts
