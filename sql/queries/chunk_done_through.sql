-- Where a chunk resumes (NULL: from its first id).
SELECT done_through FROM qlarius_backfill_chunks
WHERE run_id = %(run_id)s AND table_name = %(table_name)s AND first_id = %(first_id)s
