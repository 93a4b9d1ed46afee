SELECT id FROM targets ORDER BY id
