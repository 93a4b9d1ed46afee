-- The operators' doors onto schedules and queue controls (ops/controls.py): the command line
-- and the console read and write through these; plain SQL works on the same tables.

-- name: set_actor :exec
-- Who is acting, for this transaction only (the triggers write it into updated_by).
SELECT set_config('qlarius.actor', %(actor)s, true)

-- name: schedules :many
-- Every schedule, with its last tick and that tick's job.
SELECT task_name, cron, enabled, last_tick_at, updated_at, updated_by, last_deferred_at,
       last_job_id, last_job_status
FROM qlarius_schedule_last_ticks ORDER BY task_name

-- name: set_schedule_cron :one
UPDATE qlarius_schedules SET cron = %(cron)s WHERE task_name = %(task_name)s
RETURNING task_name, cron, enabled, last_tick_at, updated_at, updated_by

-- name: set_schedule_enabled :one
UPDATE qlarius_schedules SET enabled = %(enabled)s WHERE task_name = %(task_name)s
RETURNING task_name, cron, enabled, last_tick_at, updated_at, updated_by

-- name: run_schedule_now :one
-- One job now, through the ticks' ledger (none while a job of the task still waits).
SELECT r.task_name, r.tick_at, r.job_id
FROM qlarius_defer_ticks(ARRAY[%(task_name)s]::text[], ARRAY[NULL]::text[],
                         ARRAY[now()], ARRAY[%(queue)s]::text[],
                         ARRAY[0], true) AS r

-- name: ticks :many
-- The latest ticks (of one schedule, or all), with their jobs.
SELECT t.task_name, t.tick_at, t.run_now, t.missed, t.job_id, t.deferred_at,
       j.status::text AS job_status
FROM qlarius_schedule_ticks t
LEFT JOIN procrastinate_jobs j ON j.id = t.job_id
WHERE %(task_name)s::text IS NULL OR t.task_name = %(task_name)s
ORDER BY t.tick_at DESC, t.task_name
LIMIT %(limit)s

-- name: queues :many
-- Every queue's controls, with what waits and runs in it now (our tasks only).
SELECT c.queue_name, c.paused, c.concurrency, c.updated_at, c.updated_by,
       count(j.id) FILTER (WHERE j.status = 'todo') AS waiting,
       count(j.id) FILTER (WHERE j.status = 'doing') AS running
FROM qlarius_queue_controls c
LEFT JOIN procrastinate_jobs j
       ON j.queue_name = c.queue_name AND j.status IN ('todo', 'doing')
      AND qlarius_owns_job(j.task_name, j.queue_name)
GROUP BY c.queue_name
ORDER BY c.queue_name

-- name: set_queue_paused :one
UPDATE qlarius_queue_controls SET paused = %(paused)s WHERE queue_name = %(queue_name)s
RETURNING queue_name, paused, concurrency, updated_at, updated_by

-- name: set_queue_concurrency :one
UPDATE qlarius_queue_controls SET concurrency = %(concurrency)s
WHERE queue_name = %(queue_name)s
RETURNING queue_name, paused, concurrency, updated_at, updated_by

-- name: tasks :many
SELECT task_name, paused, updated_at, updated_by FROM qlarius_task_controls
ORDER BY task_name

-- name: set_task_paused :one
UPDATE qlarius_task_controls SET paused = %(paused)s WHERE task_name = %(task_name)s
RETURNING task_name, paused, updated_at, updated_by

-- name: apply_schedules :many
-- Several schedules at once: each one's cron, or disabled where the cron is NULL.
UPDATE qlarius_schedules s
SET cron = COALESCE(c.cron, s.cron), enabled = c.cron IS NOT NULL
FROM unnest(%(tasks)s::text[], %(crons)s::text[]) AS c(task_name, cron)
WHERE s.task_name = c.task_name
RETURNING s.task_name
