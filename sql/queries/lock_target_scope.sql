-- A scope job takes its target's scope row for its whole transaction (waits for holders).
SELECT target_id FROM qlarius_target_locks
WHERE target_id = %(target_id)s AND scope = %(scope)s
FOR UPDATE
