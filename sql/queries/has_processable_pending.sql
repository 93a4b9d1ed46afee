-- Is there pending work in {table} that a drain could take now (not only rows waiting for a
-- busy target)? Asked after the drainer lock is released, so nothing committed is missed.
WITH free AS (
    SELECT target_id FROM qlarius_target_locks WHERE scope = %(scope)s FOR SHARE SKIP LOCKED
)
SELECT EXISTS (
    SELECT 1 FROM {table} p
    WHERE (p.target_id IS NULL OR p.target_id IN (SELECT target_id FROM free))
      AND (p.retry_after IS NULL OR p.retry_after <= now())
) AS pending
