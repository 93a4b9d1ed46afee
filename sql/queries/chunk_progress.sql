-- A chunk's batch is done (in the batch's own transaction, with its counts).
UPDATE qlarius_backfill_chunks SET done_through = %(done_through)s
WHERE run_id = %(run_id)s AND table_name = %(table_name)s AND first_id = %(first_id)s
