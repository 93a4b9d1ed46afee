SELECT id FROM me_files WHERE id = %(me_file_id)s
