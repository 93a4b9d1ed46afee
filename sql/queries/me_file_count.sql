SELECT count(*) AS n FROM me_files
