-- Queries of the cost curve (qlarius_jobs/bench/scale.py, `make bench-scale`).

-- name: scale_data_set :one
-- The data set a template database holds: what generated it and how long that took (NULL row:
-- not a finished data set).
SELECT params, counts, generated_seconds
FROM bench_scale_data_set

-- name: scale_create_data_set_table :exec
CREATE TABLE IF NOT EXISTS bench_scale_data_set (
    params jsonb NOT NULL,
    counts jsonb NOT NULL,
    generated_seconds double precision NOT NULL
)

-- name: scale_record_data_set :exec
-- Written last, after the data set is complete: a half-generated template has no row.
INSERT INTO bench_scale_data_set (params, counts, generated_seconds)
VALUES (%(params)s, %(counts)s, %(generated_seconds)s)

-- name: scale_largest_tables :many
-- The largest tables on disk, indexes and TOAST included.
SELECT c.relname AS table_name, pg_total_relation_size(c.oid) AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname = 'public'
ORDER BY pg_total_relation_size(c.oid) DESC
LIMIT %(limit)s

-- name: scale_database_bytes :one
SELECT pg_database_size(current_database()) AS bytes

-- name: scale_work_left :one
-- Work of our queues still to do: jobs waiting or running, targets whose populate has not
-- committed, pending syncs and reconciles. Whether there is any, not how much: the bench polls
-- this every 50 ms, and counting millions of pending rows would load the machine it measures.
SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE status IN ('todo', 'doing')) AS jobs,
       EXISTS (SELECT 1 FROM targets WHERE population_status <> 'populated') AS unpopulated,
       EXISTS (SELECT 1 FROM qlarius_pending_syncs) AS syncs,
       EXISTS (SELECT 1 FROM qlarius_pending_reconciles) AS reconciles
