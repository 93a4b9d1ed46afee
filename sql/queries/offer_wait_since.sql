-- When this campaign's offers started waiting for its target (now, the first time).
WITH started AS (
    INSERT INTO qlarius_offer_waits (campaign_id) VALUES (%(campaign_id)s)
    ON CONFLICT (campaign_id) DO NOTHING
    RETURNING since
)
SELECT since FROM started
UNION ALL
SELECT since FROM qlarius_offer_waits WHERE campaign_id = %(campaign_id)s
LIMIT 1
