-- The embedded cluster (embedded.py).

-- name: database_exists :one
-- A row when the cluster has a database of this name.
SELECT 1 FROM pg_database WHERE datname = %(name)s
