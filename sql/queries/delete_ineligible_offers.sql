-- A MeFile's offers that no longer match an eligible (campaign, band, first media run).
-- One statement, whatever the number of rows (no OR-chain of parameters).
DELETE FROM offers o
WHERE o.me_file_id = %(me_file_id)s
  AND NOT EXISTS (
      SELECT 1 FROM qlarius_eligible_offers e
      WHERE e.me_file_id = o.me_file_id AND e.campaign_id = o.campaign_id
        AND e.target_band_id = o.target_band_id AND e.media_run_id = o.media_run_id)
