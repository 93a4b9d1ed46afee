SELECT array_agg(id ORDER BY id) AS ids FROM targets
