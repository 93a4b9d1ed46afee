-- Populating holds the target row exclusively: syncs (FOR SHARE) wait for it, and it waits
-- for syncs in flight, so each sees the other's committed result.
SELECT id, population_status FROM targets WHERE id = %(target_id)s FOR UPDATE
