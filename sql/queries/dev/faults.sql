-- The fault scenarios' own checks and moves on their throwaway cluster (faults.py).

-- name: job_status :one
-- One job's status, as text.
SELECT status::text AS status FROM procrastinate_jobs WHERE id = %(job_id)s

-- name: job_statuses :many
-- The status of each of these jobs (a job missing from the table has no row).
SELECT id, status::text AS status FROM procrastinate_jobs WHERE id = ANY(%(job_ids)s)

-- name: client_backend_count :one
-- Client backends connected now, of one application_name (or of all, when it is NULL).
SELECT count(*) AS n FROM pg_stat_activity
WHERE backend_type = 'client backend'
  AND (%(application_name)s::text IS NULL OR application_name = %(application_name)s::text)

-- name: work_due_or_pending :many
-- A row for each job due or running and each pending sync or reconcile: none when quiet.
SELECT 1 FROM procrastinate_jobs WHERE status IN ('todo', 'doing')
AND (scheduled_at IS NULL OR scheduled_at <= now())
UNION ALL SELECT 1 FROM qlarius_pending_syncs
UNION ALL SELECT 1 FROM qlarius_pending_reconciles

-- name: first_band :one
-- The band a scenario's client defers snapshot jobs for.
SELECT min(id) AS band_id FROM target_bands

-- name: first_target :one
-- The target a scenario populates.
SELECT min(id) AS target_id FROM targets

-- name: succeeded_job_ids :many
-- The jobs that had succeeded before the outage (none of them may run again).
SELECT id FROM procrastinate_jobs WHERE status = 'succeeded'

-- name: server_now :one
-- The server's clock, when it is back.
SELECT now() AS now

-- name: jobs_succeeded_since :many
-- A row for each job that succeeded after the given time: jobs flow again.
SELECT 1 FROM procrastinate_events WHERE type = 'succeeded' AND at > %(since)s

-- name: jobs_started_again_since :one
-- How many of the given (already succeeded) jobs started again after the given time.
SELECT count(DISTINCT job_id) AS n FROM procrastinate_events
WHERE type = 'started' AND at > %(since)s AND job_id = ANY(%(job_ids)s)

-- name: stuck_job_count :one
-- Jobs due and not done that nothing happened to for 10 s (a periodic job deferred or started
-- a moment ago is not stuck).
SELECT count(*) AS n FROM procrastinate_jobs j WHERE status IN ('todo', 'doing')
AND (scheduled_at IS NULL OR scheduled_at <= now() - interval '10 seconds')
AND NOT EXISTS (SELECT 1 FROM procrastinate_events e WHERE e.job_id = j.id
                AND e.at > now() - interval '10 seconds')

-- name: make_target_snapshots_stale :exec
-- Stale snapshots on every population of the target, for the populate to refresh.
UPDATE target_populations SET matching_tags_snapshot = '{"tags": 1}'
WHERE target_band_id IN (SELECT id FROM target_bands WHERE target_id = %(target_id)s)

-- name: take_first_population :one
-- Delete the target's first population row (the populate must insert it again); its key.
DELETE FROM target_populations WHERE id = (
    SELECT min(id) FROM target_populations
    WHERE target_band_id IN (SELECT id FROM target_bands WHERE target_id = %(target_id)s)
) RETURNING target_band_id, me_file_id

-- name: insert_population :exec
-- The population row the populate must insert, inserted (and held, uncommitted) first.
INSERT INTO target_populations (target_band_id, me_file_id)
VALUES (%(target_band_id)s, %(me_file_id)s)

-- name: backends_waiting_on_populations :many
-- The backends waiting for a lock in a statement on target_populations (the populate).
SELECT pid FROM pg_stat_activity
WHERE wait_event_type = 'Lock' AND query LIKE '%target_populations%'

-- name: backend_exists :one
-- Whether the backend of this pid is still there.
SELECT 1 FROM pg_stat_activity WHERE pid = %(pid)s

-- name: job_error_types :many
-- The job's error history, one error type per failed attempt, in order.
SELECT error_type FROM qlarius_job_errors WHERE job_id = %(job_id)s ORDER BY attempt

-- name: clear_pending_changes :exec
-- Forget the pending syncs and reconciles the generator left (the backfill is measured alone).
WITH syncs AS (DELETE FROM qlarius_pending_syncs)
DELETE FROM qlarius_pending_reconciles

-- name: null_snapshot_count :one
-- Rows with a NULL snapshot, populations, offers and ad events together.
SELECT (SELECT count(*) FROM target_populations WHERE matching_tags_snapshot IS NULL)
     + (SELECT count(*) FROM offers WHERE matching_tags_snapshot IS NULL)
     + (SELECT count(*) FROM ad_events WHERE matching_tags_snapshot IS NULL) AS n

-- name: backfill_chunks_succeeded :many
-- A row for each backfill chunk job that succeeded.
SELECT 1 FROM procrastinate_jobs WHERE task_name = 'backfill_snapshot_chunk'
AND status = 'succeeded'

-- name: backfill_runs_finished :one
-- Whether every backfill run has finished (NULL when there is none).
SELECT bool_and(finished_at IS NOT NULL) AS finished FROM backfill_runs

-- name: backfill_outcome :one
-- After the backfill: NULL snapshots a population explains still left, and the runs' totals.
SELECT (SELECT count(*) FROM target_populations WHERE matching_tags_snapshot IS NULL)
     + (SELECT count(*) FROM offers o WHERE matching_tags_snapshot IS NULL AND EXISTS
        (SELECT 1 FROM target_populations tp WHERE tp.me_file_id = o.me_file_id
         AND tp.target_band_id = o.target_band_id)) AS left_over,
       sum(orphan_offers + orphan_ad_events) AS orphans,
       sum(updated_populations + updated_offers + updated_ad_events) AS updated,
       sum(chunks_failed) AS failed
FROM backfill_runs

-- name: cap_max_connections :exec
-- The connections scenario's server: 20 connections (applied at the next restart).
ALTER SYSTEM SET max_connections = 20

-- name: operator_probe :one
-- An operator's first statement, on a connection of its own.
SELECT 1 AS ok

-- name: hold_target_bands_table :exec
-- Every statement that reads target_bands waits until this transaction ends (the connections
-- scenario's burst: each job waiting holds a pooled connection, so the pool grows).
LOCK TABLE target_bands IN ACCESS EXCLUSIVE MODE

-- name: hold_target_populations_scope :exec
-- Take the target's populations scope row and keep it (the populate then waits for it).
SELECT 1 FROM qlarius_target_locks
WHERE target_id = %(target_id)s AND scope = 'populations' FOR UPDATE

-- name: abort_job :exec
-- An operator aborts a running job, as procrastinate's cancel does.
SELECT procrastinate_cancel_job_v1(%(job_id)s, true, false)

-- name: target_population_status :one
-- The target's population status.
SELECT population_status FROM targets WHERE id = %(target_id)s

-- name: backfill_runs_listing :many
-- Every backfill run and the jobs of the backfill, for a scenario that failed to say why.
SELECT 'run' AS kind, id, finished_at IS NOT NULL AS done, started_at::text AS detail
FROM backfill_runs
UNION ALL
SELECT 'job', id, status IN ('succeeded', 'failed'), task_name || ' ' || status::text || ' ' || args::text
FROM procrastinate_jobs WHERE task_name LIKE 'backfill%'
ORDER BY kind, id
