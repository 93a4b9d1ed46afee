-- The PgBouncer of the tests, the storm and the fault tests (pooler.py).

-- name: probe :one
-- Whether PgBouncer answers (and reaches the server), while it starts.
SELECT 1 AS ok
