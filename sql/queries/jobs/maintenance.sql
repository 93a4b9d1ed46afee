-- Rescue and pruning (maintenance.py), after Oban's Lifeline and Pruner.

-- name: rescue_stalled_jobs :many
-- Oban's Lifeline: running jobs whose worker stopped sending heartbeats go back to the queue
-- (or fail, when that was their last attempt), once: the row lock and SKIP LOCKED keep two
-- rescuers from taking the same job. A killed run counts as an attempt and is recorded in the
-- error history. Live workers heartbeat every few seconds, so their jobs are never touched.
-- Only this project's jobs (another application's stalled jobs are its own business), and,
-- with only_ids, only those (one job at a time, when a batch failed: see maintenance.py).
WITH stalled AS (
    SELECT j.id, j.task_name, j.attempts
    FROM procrastinate_jobs j
    LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
    WHERE j.status = 'doing'
      AND qlarius_owns_job(j.task_name, j.queue_name)
      AND (%(only_ids)s::bigint[] IS NULL OR j.id = ANY(%(only_ids)s::bigint[]))
      AND (w.id IS NULL
           OR w.last_heartbeat < now() - make_interval(secs => %(stalled_after_seconds)s))
    ORDER BY j.id
    FOR UPDATE OF j SKIP LOCKED
),
decided AS (
    SELECT s.id, s.task_name, s.attempts,
           s.attempts + 1 < COALESCE(l.max_attempts, 1) AS retry
    FROM stalled s
    LEFT JOIN unnest(%(task_names)s::text[], %(max_attempts)s::int[]) AS l(task_name, max_attempts)
      ON l.task_name = s.task_name
),
recorded AS (
    INSERT INTO qlarius_job_errors (job_id, task_name, attempt, error_type, message)
    SELECT id, task_name, attempts + 1, 'WorkerLost',
           'the worker running this job stopped sending heartbeats (killed or lost); '
           || CASE WHEN retry THEN 'rescued: queued again' ELSE 'no attempt left: failed' END
    FROM decided
)
SELECT d.id, d.task_name, d.retry,
       CASE WHEN d.retry
            THEN procrastinate_retry_job_v2(d.id, now(), NULL, NULL, NULL)::text
            ELSE procrastinate_finish_job_v1(d.id, 'failed', false)::text END AS done
FROM decided d
ORDER BY d.id

-- name: stalled_job_ids :many
-- The ids rescue_stalled_jobs would take, to rescue them one by one when the batch failed.
SELECT j.id
FROM procrastinate_jobs j
LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
WHERE j.status = 'doing'
  AND qlarius_owns_job(j.task_name, j.queue_name)
  AND (w.id IS NULL
       OR w.last_heartbeat < now() - make_interval(secs => %(stalled_after_seconds)s))
ORDER BY j.id

-- name: prune_stalled_workers :many
-- Our worker rows (introduced by qlarius-jobs worker) without a heartbeat for long: their jobs
-- were rescued above. Another application's workers are left to it.
DELETE FROM procrastinate_workers w
WHERE w.last_heartbeat < now() - make_interval(secs => %(stalled_after_seconds)s)
  AND EXISTS (SELECT 1 FROM qlarius_worker_queues q WHERE q.worker_id = w.id)
RETURNING w.id

-- name: prune_horizon :one
-- The first job deferred after the shortest retention began: this job and every later one (a
-- later id was taken later, so it ended later still) is too young for any state's retention,
-- so the prune's walk stops before it instead of reading the whole table every hour. Found on
-- the events' time index from the cutoff on. NULL when no job was deferred since (walk all).
SELECT e.job_id AS horizon
FROM procrastinate_events e
WHERE e.type = 'deferred' AND e.at >= now() - make_interval(days => %(retention_days)s)
ORDER BY e.at
LIMIT 1

-- name: prune_finished_jobs :one
-- One bounded batch of finished jobs whose last event is older than their state's retention
-- (aborted: the cancelled one), by keyset over ids below the horizon (prune_horizon); events,
-- error history and results go with them (ON DELETE CASCADE). Short transactions, short
-- locks: the caller loops. Only this project's jobs: another application keeps its own.
WITH candidates AS (
    SELECT j.id, j.status
    FROM procrastinate_jobs j
    WHERE j.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
      AND qlarius_owns_job(j.task_name, j.queue_name)
      AND j.id > %(after_id)s
      AND (%(horizon)s::bigint IS NULL OR j.id < %(horizon)s)
    ORDER BY j.id
    LIMIT %(batch_size)s
),
doomed AS (
    SELECT c.id FROM candidates c
    WHERE NOT EXISTS (
        SELECT 1 FROM procrastinate_events e
        WHERE e.job_id = c.id
          AND e.at >= now() - make_interval(days => CASE c.status
              WHEN 'succeeded' THEN %(succeeded_days)s
              WHEN 'failed' THEN %(failed_days)s
              ELSE %(cancelled_days)s END))
),
deleted AS (
    DELETE FROM procrastinate_jobs j USING doomed d WHERE j.id = d.id RETURNING j.id
)
SELECT (SELECT max(id) FROM candidates) AS last_candidate, (SELECT count(*) FROM deleted) AS deleted

-- name: prune_backfill_runs :count
DELETE FROM backfill_runs
WHERE started_at < now() - make_interval(days => %(retention_days)s)

-- name: prune_schedule_ticks :count
-- The ticks' ledger past the retention, but each schedule's latest tick (what status shows).
DELETE FROM qlarius_schedule_ticks t
WHERE t.deferred_at < now() - make_interval(days => %(retention_days)s)
  AND t.tick_at < (SELECT max(k.tick_at) FROM qlarius_schedule_ticks k
                   WHERE k.task_name = t.task_name)
