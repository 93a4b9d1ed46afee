-- Delete the offers lock_ineligible_offers locked (one statement, any number of rows).
DELETE FROM offers WHERE id = ANY(%(offer_ids)s::bigint[])
