-- Lock the offers a reconcile may delete or refresh (of the given MeFiles, or of one
-- campaign) in id order, without waiting: an offer locked elsewhere (the application
-- recording an ad event) leaves its MeFile for a later batch, so a reconcile never waits on
-- the application and can never deadlock with it. Returns the MeFiles left for later.
WITH in_scope AS MATERIALIZED (
    SELECT o.id, o.me_file_id
    FROM offers o
    JOIN campaigns c ON c.id = o.campaign_id
    WHERE c.target_id = ANY(%(free_targets)s::bigint[])
      AND (%(me_file_ids)s::bigint[] IS NULL OR o.me_file_id = ANY(%(me_file_ids)s::bigint[]))
      AND (%(campaign_id)s::bigint IS NULL OR o.campaign_id = %(campaign_id)s::bigint)
),
locked AS MATERIALIZED (
    SELECT o.id FROM offers o
    WHERE o.id IN (SELECT id FROM in_scope)
    ORDER BY o.id
    FOR UPDATE SKIP LOCKED
)
SELECT DISTINCT s.me_file_id
FROM in_scope s
WHERE NOT EXISTS (SELECT 1 FROM locked l WHERE l.id = s.id)
