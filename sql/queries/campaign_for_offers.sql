-- The campaign and its target's status. FOR SHARE on the target waits for a populate in
-- flight, so a 'populated' seen here comes with every population and snapshot committed.
SELECT c.id, c.target_id, c.launched_at, c.deactivated_at, t.population_status
FROM campaigns c
JOIN targets t ON t.id = c.target_id
WHERE c.id = %(campaign_id)s
FOR SHARE OF t
