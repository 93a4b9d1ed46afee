-- The console's search by arguments (`me_file_id:42 target_id:7`, ANDed) is a JSONB
-- containment, `args @> '{"me_file_id": 42, "target_id": 7}'`: this GIN index answers it from
-- the index on a job table of millions of rows, rather than by reading every row.
--
-- jsonb_path_ops, not the default jsonb_ops: it indexes only what @> needs (a hash per path
-- and value), so it is smaller and faster to keep up to date as jobs are inserted; it cannot
-- answer the key-exists operators (?, ?|, ?&), which nothing here uses.
--
-- procrastinate_jobs is shared with other applications (migration 0012): an index is safe to
-- add there (it changes no row, no constraint and no query's answer, and their jobs are
-- searchable too), and it is only created when absent. Migrations run in a transaction, so
-- this takes a SHARE lock on the table while it builds (inserts wait; reads do not); on a
-- large live table, build it beforehand with
--   CREATE INDEX CONCURRENTLY qlarius_jobs_args_search_idx
--       ON procrastinate_jobs USING gin (args jsonb_path_ops);
-- and this migration then finds it and does nothing.
CREATE INDEX IF NOT EXISTS qlarius_jobs_args_search_idx
    ON procrastinate_jobs USING gin (args jsonb_path_ops);
