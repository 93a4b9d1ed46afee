-- Populations behind eligible offers (of the given MeFiles or one campaign, in free targets)
-- whose snapshot is NULL: legacy rows, filled before their offers are written.
SELECT DISTINCT population_id AS id, me_file_id
FROM qlarius_eligible_offers
WHERE matching_tags_snapshot IS NULL
  AND target_id = ANY(%(free_targets)s::bigint[])
  AND (%(me_file_ids)s::bigint[] IS NULL OR me_file_id = ANY(%(me_file_ids)s::bigint[]))
  AND (%(campaign_id)s::bigint IS NULL OR campaign_id = %(campaign_id)s::bigint)
  AND me_file_id <> ALL(%(blocked)s::bigint[])
