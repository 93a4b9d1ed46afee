UPDATE targets
SET population_status = 'populated', last_populated_at = now(), status_before_populating = NULL,
    updated_at = now()
WHERE id = %(target_id)s
