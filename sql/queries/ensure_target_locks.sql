-- Create the scope rows a target lacks (one target, or all when target_id is NULL). The
-- trigger on targets creates them, but not for rows written with triggers off (bulk loads,
-- logical replication); until they exist, drains treat the target as busy and defer to it.
INSERT INTO qlarius_target_locks (target_id, scope)
SELECT t.id, s.scope
FROM targets t CROSS JOIN (VALUES ('populations'), ('offers')) s(scope)
WHERE (%(target_id)s::bigint IS NULL OR t.id = %(target_id)s::bigint)
  AND NOT EXISTS (SELECT 1 FROM qlarius_target_locks l WHERE l.target_id = t.id AND l.scope = s.scope)
ON CONFLICT DO NOTHING
