-- Of the given (free) targets, those whose populations syncs maintain. Read after their scope
-- rows were locked, so a populate that committed before that is seen.
SELECT target_id FROM qlarius_synced_targets
WHERE target_id = ANY(%(target_ids)s::bigint[])
ORDER BY target_id
