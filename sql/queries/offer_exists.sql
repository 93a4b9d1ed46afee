SELECT EXISTS (SELECT 1 FROM offers WHERE id = %(offer_id)s) AS present
