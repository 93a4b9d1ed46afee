-- Populating failed for good: the populations are untouched (one transaction), so the
-- status goes back to what it was before the trigger.
UPDATE targets
SET population_status = COALESCE(status_before_populating, population_status),
    status_before_populating = NULL, updated_at = now()
WHERE id = %(target_id)s AND population_status = 'populating'
RETURNING population_status
