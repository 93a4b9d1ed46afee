-- trigger_population(): remember the status to return to if populating fails for good.
UPDATE targets
SET status_before_populating = CASE WHEN population_status = 'populating'
                                    THEN status_before_populating ELSE population_status END,
    population_status = 'populating', updated_at = now()
WHERE id = %(target_id)s
RETURNING id
