-- The worker process (runner.py).

-- name: connection_budget :one
-- How many connections a worker process may open without taking the last ones (reserved for
-- superusers and operators) or starving the other clients.
SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int
           + COALESCE(NULLIF(current_setting('reserved_connections', true), '')::int, 0) AS reserved,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS in_use
