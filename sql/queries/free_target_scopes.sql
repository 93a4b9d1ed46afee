-- The targets a batch may work on now, locked for its transaction so that none can be taken
-- before it commits: its scope row (no scope job holds it), its targets row and, for offers,
-- its campaigns' rows (none is being deleted: a delete would cascade into rows this batch
-- writes). Never waits: a target with any of them held is simply not returned (busy).
WITH scope_rows AS MATERIALIZED (
    SELECT target_id FROM qlarius_target_locks
    WHERE scope = %(scope)s
    ORDER BY target_id
    FOR SHARE SKIP LOCKED
),
target_rows AS MATERIALIZED (
    SELECT id FROM targets
    WHERE id IN (SELECT target_id FROM scope_rows)
    ORDER BY id
    FOR KEY SHARE SKIP LOCKED
),
campaign_rows AS MATERIALIZED (
    SELECT id FROM campaigns
    WHERE %(scope)s = 'offers' AND target_id IN (SELECT id FROM target_rows)
    ORDER BY id
    FOR KEY SHARE SKIP LOCKED
)
SELECT t.id AS target_id
FROM target_rows t
WHERE %(scope)s <> 'offers'
   OR NOT EXISTS (SELECT 1 FROM campaigns c
                  WHERE c.target_id = t.id AND c.id NOT IN (SELECT id FROM campaign_rows))
ORDER BY t.id
