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
-- What is left for workers on these queues: jobs due or running there, plus the pending work
-- their jobs would take now (syncs and reconciles not set aside for a retry nor left for a
-- target a job holds; targets a populate must handle; campaigns whose offers job must run).
-- With later: also what waits for later (retries scheduled later, pending rows set aside
-- for a retry or left for a busy target): everything not yet done. A paused queue's work, and
-- a paused task's jobs, are not left for workers now (they wait for the resume), but later.
WITH open AS MATERIALIZED (
    SELECT ARRAY(SELECT unnest(%(queues)s::text[])
                 EXCEPT SELECT queue_name FROM qlarius_queue_controls
                        WHERE paused AND NOT %(later)s) AS queues
), free AS MATERIALIZED (
    SELECT target_id, scope FROM qlarius_target_locks ORDER BY target_id, scope
    FOR SHARE SKIP LOCKED
)
SELECT (SELECT count(*) FROM procrastinate_jobs
        WHERE (status = 'doing' AND queue_name = ANY(%(queues)s))
           OR (status = 'todo' AND queue_name::text = ANY((SELECT queues FROM open)::text[])
               AND (%(later)s
                    OR NOT qlarius_waits_for_a_resume(id, queue_name, task_name, lock, priority))
               AND (%(later)s OR scheduled_at IS NULL OR scheduled_at <= now())))
     + (SELECT count(*) FROM qlarius_pending_syncs p
        WHERE 'targets' = ANY((SELECT queues FROM open)::text[])
          AND (%(later)s OR p.retry_after IS NULL OR p.retry_after <= now())
          AND (%(later)s OR p.target_id IS NULL
               OR p.target_id IN (SELECT target_id FROM free WHERE scope = 'populations')))
     + (SELECT count(*) FROM qlarius_pending_reconciles p
        WHERE 'offers' = ANY((SELECT queues FROM open)::text[])
          AND (%(later)s OR p.retry_after IS NULL OR p.retry_after <= now())
          AND (%(later)s OR p.target_id IS NULL
               OR p.target_id IN (SELECT target_id FROM free WHERE scope = 'offers')))
     + (SELECT count(*) FROM qlarius_pending_targets p JOIN targets t ON t.id = p.target_id
        WHERE 'targets' = ANY((SELECT queues FROM open)::text[])
          AND (%(later)s OR p.retry_after IS NULL OR p.retry_after <= now())
          AND (t.population_status <> 'not_populated' OR p.retry_after IS NOT NULL))
     + (SELECT count(*) FROM qlarius_pending_criteria WHERE 'targets' = ANY((SELECT queues FROM open)::text[]))
     + (SELECT count(*) FROM qlarius_pending_campaigns p LEFT JOIN campaigns c
        ON c.id = p.campaign_id
        WHERE 'default' = ANY((SELECT queues FROM open)::text[]) AND (%(later)s OR c.id IS NOT NULL)
          AND (%(later)s OR p.retry_after IS NULL OR p.retry_after <= now()))
       AS left

-- name: now :one
SELECT now() AS now
