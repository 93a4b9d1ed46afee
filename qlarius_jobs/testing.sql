-- Test helpers for the application's own tests (testing.py).

-- name: enqueued_jobs :many
-- Waiting jobs of a task (or of every task), oldest first, whose arguments contain the given
-- ones (JSON containment, as Oban.Testing matches a subset of the args).
-- Columns: id, queue, task, args, scheduled_at, attempts.
SELECT id, queue_name AS queue, task_name AS task, args, scheduled_at, attempts
FROM procrastinate_jobs
WHERE status = 'todo'
  AND (%(task)s::text IS NULL OR task_name = %(task)s)
  AND args @> %(args)s::jsonb
ORDER BY id

-- name: outcomes_since :many
-- How the jobs that ended since a moment ended. Columns: type, jobs.
SELECT type::text AS type, count(*) AS jobs
FROM procrastinate_events
WHERE at >= %(since)s AND type IN ('succeeded', 'failed', 'aborted', 'cancelled')
GROUP BY type

-- name: work_left :one
-- Jobs due in the queues, plus the pending syncs and reconciles their drains would take.
SELECT (SELECT count(*) FROM procrastinate_jobs
        WHERE status = 'todo' AND queue_name = ANY(%(queues)s)
          AND (scheduled_at IS NULL OR scheduled_at <= now()))
     + (SELECT count(*) FROM qlarius_pending_syncs p
        WHERE 'targets' = ANY(%(queues)s) AND (p.retry_after IS NULL OR p.retry_after <= now()))
     + (SELECT count(*) FROM qlarius_pending_reconciles p
        WHERE 'offers' = ANY(%(queues)s) AND (p.retry_after IS NULL OR p.retry_after <= now()))
       AS left

-- name: now :one
SELECT now() AS now
