-- Record pending work in {table} for one MeFile, if it exists (returns no row otherwise).
INSERT INTO {table} (me_file_id)
SELECT id FROM me_files WHERE id = %(me_file_id)s
RETURNING id
