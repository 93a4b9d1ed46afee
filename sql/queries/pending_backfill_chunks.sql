-- Chunk jobs of an earlier run still waiting or running: their rows are taken care of.
SELECT count(*) AS pending FROM procrastinate_jobs
WHERE task_name = 'backfill_snapshot_chunk' AND status IN ('todo', 'doing')
