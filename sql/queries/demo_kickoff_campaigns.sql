SELECT id FROM campaigns WHERE deactivated_at IS NULL AND launched_at IS NOT NULL ORDER BY id
