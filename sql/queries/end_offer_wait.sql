DELETE FROM qlarius_offer_waits WHERE campaign_id = %(campaign_id)s
