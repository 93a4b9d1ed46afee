-- The same, only if no one holds it (taken under the batch barrier; see scopes.py).
SELECT target_id FROM qlarius_target_locks
WHERE target_id = %(target_id)s AND scope = %(scope)s
FOR UPDATE SKIP LOCKED
