-- A chunk succeeded; true when it was its run's last.
SELECT run_finished FROM qlarius_end_backfill_chunk(%(run_id)s, %(table_name)s, %(first_id)s, false)
