-- The populated targets an audit may judge now: no scope job holds either of their scopes (a
-- populate or an offers job in flight is not drift). Share-locked for the audit's transaction,
-- so none starts before the audit's statement has read.
WITH locked AS MATERIALIZED (
    SELECT l.target_id
    FROM qlarius_target_locks l
    WHERE l.target_id IN (SELECT id FROM targets WHERE population_status = 'populated')
    ORDER BY l.target_id, l.scope
    FOR SHARE SKIP LOCKED
)
SELECT target_id FROM locked GROUP BY target_id HAVING count(*) = 2 ORDER BY target_id
