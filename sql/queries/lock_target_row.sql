-- A scope job keeps its target from being deleted while it runs (updates are not blocked):
-- taken first, before any row the delete would cascade into.
SELECT id FROM targets WHERE id = %(target_id)s FOR KEY SHARE
