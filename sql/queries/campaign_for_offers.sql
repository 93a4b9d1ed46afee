-- The campaign and its target's status. No lock: the job then takes the target's offers scope
-- (a row only jobs lock), never the targets row the application updates.
SELECT c.id, c.target_id, c.launched_at, c.deactivated_at, t.population_status,
       t.status_before_populating,
       c.launched_at > now() AS launches_later,
       extract(epoch FROM c.launched_at - now()) AS seconds_to_launch
FROM campaigns c
JOIN targets t ON t.id = c.target_id
WHERE c.id = %(campaign_id)s
