SELECT target_id FROM qlarius_synced_targets ORDER BY target_id
