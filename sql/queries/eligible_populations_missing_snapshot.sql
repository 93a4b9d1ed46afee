-- Populations behind eligible offers (of one campaign or one MeFile) whose snapshot is NULL.
SELECT DISTINCT population_id AS id
FROM qlarius_eligible_offers
WHERE matching_tags_snapshot IS NULL
  AND (%(campaign_id)s::bigint IS NULL OR campaign_id = %(campaign_id)s::bigint)
  AND (%(me_file_id)s::bigint IS NULL OR me_file_id = %(me_file_id)s::bigint)
