-- Tables with chunk jobs (of any run) still waiting or running: their rows are taken care of.
SELECT DISTINCT args ->> 'table' AS table_name FROM procrastinate_jobs
WHERE task_name = 'backfill_snapshot_chunk' AND status IN ('todo', 'doing')
