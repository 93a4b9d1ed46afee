-- The bookkeeping of `qlarius-jobs migrate` (db/migrate.py). The schema itself is in
-- sql/migrations/ and the operators' views in sql/monitoring.sql.

-- name: lock_migrations :exec
-- One migrate step at a time per database, for the step's transaction.
SELECT pg_advisory_xact_lock(%(key)s)

-- name: quiet_notices :exec
-- "relation already exists, skipping" and the like are not news (for this transaction only).
SET LOCAL client_min_messages = warning

-- name: create_bookkeeping :exec
CREATE TABLE IF NOT EXISTS qlarius_schema_migrations (
    version int PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS qlarius_procrastinate_schema (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: schema_state :one
-- Whether migrate has ever run here (its bookkeeping tables exist); read-only.
SELECT to_regclass('qlarius_schema_migrations') IS NOT NULL
   AND to_regclass('qlarius_procrastinate_schema') IS NOT NULL AS bookkept

-- name: procrastinate_schema_version :one
-- The Procrastinate version whose schema is applied (no row: none recorded yet).
SELECT version FROM qlarius_procrastinate_schema

-- name: procrastinate_tables_exist :one
-- Whether Procrastinate's tables exist (applied by hand, before any migrate).
SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS present

-- name: record_procrastinate_schema_version :exec
INSERT INTO qlarius_procrastinate_schema (version) VALUES (%(version)s)
ON CONFLICT (singleton) DO UPDATE SET version = excluded.version, applied_at = now()

-- name: applied_migrations :many
-- Columns: version.
SELECT version FROM qlarius_schema_migrations

-- name: migration_applied :one
SELECT version FROM qlarius_schema_migrations WHERE version = %(version)s

-- name: record_migration :exec
INSERT INTO qlarius_schema_migrations (version, name) VALUES (%(version)s, %(name)s)

-- name: analyze :exec
ANALYZE

-- name: install_default_schedules :exec
-- Each periodic job's schedule, from the settings, the first time only: after that the row
-- is the operators' (a deleted row comes back). An upgrade from Procrastinate's own periodic
-- deferrer starts from the last tick it deferred, so that a missed one is caught up once.
INSERT INTO qlarius_schedules (task_name, cron, last_tick_at, updated_by)
SELECT s.task_name, s.cron,
       (SELECT to_timestamp(max(p.defer_timestamp)) FROM procrastinate_periodic_defers p
        WHERE p.task_name = s.task_name),
       'migrate (settings)'
FROM unnest(%(tasks)s::text[], %(crons)s::text[]) AS s(task_name, cron)
ON CONFLICT (task_name) DO NOTHING

-- name: install_default_queue_controls :exec
-- A row for every queue and every task (running, not paused), the first time only.
WITH queues AS (
    INSERT INTO qlarius_queue_controls (queue_name, updated_by)
    SELECT q, 'migrate' FROM unnest(%(queues)s::text[]) AS q
    ON CONFLICT (queue_name) DO NOTHING
)
INSERT INTO qlarius_task_controls (task_name, updated_by)
SELECT t, 'migrate' FROM unnest(%(tasks)s::text[]) AS t
ON CONFLICT (task_name) DO NOTHING
