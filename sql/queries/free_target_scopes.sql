-- The targets whose scope no job holds exclusively, share-locked for this transaction so that
-- none can be taken before it commits. Never waits: a busy target is simply not returned.
SELECT target_id FROM qlarius_target_locks
WHERE scope = %(scope)s
ORDER BY target_id
FOR SHARE SKIP LOCKED
