-- What operators do to jobs (ops/jobs.py): the same for `qlarius-jobs jobs` and the console.

-- name: list_jobs :many
-- Newest first, filtered, one page: keyset pagination on id (``before``), so a page costs
-- the same on a table of millions. Every filter is a parameter; NULL means "any". ``args``
-- is the search by arguments, a JSONB containment answered by the GIN index of migration
-- 0018; ``hidden`` the tasks left out (the internal drains, unless asked for).
-- Columns: id, queue, task, state, attempts, args, scheduled_at, worker_id, last_event_at,
-- started_at, ended_at, duration_seconds (start to end, NULL until it ended), counts (its
-- summary's numbers, qlarius_job_results; NULL when none was recorded).
SELECT j.id, j.queue_name AS queue, j.task_name AS task, j.status::text AS state, j.attempts,
       j.args, j.scheduled_at, j.worker_id, ev.last_event_at, ev.started_at, ev.ended_at,
       extract(epoch FROM ev.ended_at - ev.started_at)::float8 AS duration_seconds,
       r.counts
FROM procrastinate_jobs j
CROSS JOIN LATERAL (
    SELECT max(e.at) AS last_event_at,
           max(e.at) FILTER (WHERE e.type = 'started') AS started_at,
           max(e.at) FILTER (WHERE e.type IN ('succeeded', 'failed', 'aborted')) AS ended_at
    FROM procrastinate_events e WHERE e.job_id = j.id
) ev
LEFT JOIN qlarius_job_results r ON r.job_id = j.id
WHERE (%(queue)s::text IS NULL OR j.queue_name = %(queue)s)
  AND (%(state)s::text IS NULL OR j.status = %(state)s::procrastinate_job_status)
  AND (%(task)s::text IS NULL OR j.task_name = %(task)s)
  AND (%(id)s::bigint IS NULL OR j.id = %(id)s)
  AND (%(args)s::jsonb IS NULL OR j.args @> %(args)s::jsonb)
  AND NOT j.task_name = ANY (%(hidden)s::text[])
  AND (%(before)s::bigint IS NULL OR j.id < %(before)s)
ORDER BY j.id DESC
LIMIT %(limit)s

-- name: matching_jobs :many
-- The ids of the jobs a bulk action over "every job matching the filter" touches: the same
-- filters as list_jobs, only the states the action applies to (``states``), newest first, at
-- most ``limit`` (the caller asks one more than its cap, to know it was capped).
SELECT j.id
FROM procrastinate_jobs j
WHERE (%(queue)s::text IS NULL OR j.queue_name = %(queue)s)
  AND (%(state)s::text IS NULL OR j.status = %(state)s::procrastinate_job_status)
  AND (%(task)s::text IS NULL OR j.task_name = %(task)s)
  AND (%(id)s::bigint IS NULL OR j.id = %(id)s)
  AND (%(args)s::jsonb IS NULL OR j.args @> %(args)s::jsonb)
  AND NOT j.task_name = ANY (%(hidden)s::text[])
  AND j.status::text = ANY (%(states)s::text[])
ORDER BY j.id DESC
LIMIT %(limit)s

-- name: applicable_jobs :many
-- Of these ids (the boxes ticked), those in the states the action applies to. Columns: id.
SELECT id FROM procrastinate_jobs
WHERE id = ANY (%(ids)s::bigint[]) AND status::text = ANY (%(states)s::text[])
ORDER BY id DESC

-- name: get_job :one
-- Columns: id, queue, task, state, attempts, args, lock, queueing_lock, scheduled_at,
-- worker_id, abort_requested, priority.
SELECT id, queue_name AS queue, task_name AS task, status::text AS state, attempts, args, lock,
       queueing_lock, scheduled_at, worker_id, abort_requested, priority
FROM procrastinate_jobs WHERE id = %(id)s::bigint

-- name: job_errors :many
-- The job's error history, one row per attempt that did not succeed, oldest first.
SELECT attempt, at, error_type, message, traceback
FROM qlarius_job_errors WHERE job_id = %(id)s ORDER BY attempt, at

-- name: job_events :many
-- Procrastinate's events of the job (deferred, started, failed, retried...), oldest first.
SELECT type::text AS type, at FROM procrastinate_events WHERE job_id = %(id)s ORDER BY at, id

-- name: retry_jobs :many
-- Failed, cancelled or aborted jobs wait again, now, for one more attempt (as Oban's
-- retry_job): one job from its page, or a batch from the list, in one statement. Their
-- attempts so far are kept: the retry strategy grants one more. Columns: id (one per job
-- retried; a job in another state is left alone and not returned).
UPDATE procrastinate_jobs
SET status = 'todo', scheduled_at = now(), abort_requested = false
WHERE id = ANY (%(ids)s::bigint[]) AND status IN ('failed', 'cancelled', 'aborted')
RETURNING id

-- name: cancel_jobs :many
-- Waiting jobs are cancelled (they never run), by Procrastinate's own function, one call per
-- id in one statement. Columns: id (one per job cancelled).
SELECT c.id
FROM unnest(%(ids)s::bigint[]) AS u(id),
     LATERAL procrastinate_cancel_job_v1(u.id, false, false) AS c(id)
WHERE c.id IS NOT NULL

-- name: abort_jobs :many
-- Running jobs are asked to stop (their worker cancels them at the next check); waiting ones
-- are cancelled. Procrastinate's own function, one call per id in one statement.
-- Columns: id (one per job aborted or cancelled).
SELECT c.id
FROM unnest(%(ids)s::bigint[]) AS u(id),
     LATERAL procrastinate_cancel_job_v1(u.id, true, false) AS c(id)
WHERE c.id IS NOT NULL
