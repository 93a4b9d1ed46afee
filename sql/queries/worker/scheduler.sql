-- The scheduler of each worker process (worker/scheduler.py).

-- name: schedules :many
-- What the scheduler follows: every schedule, enabled or not, and the database's time (ticks
-- are computed on it: a worker's clock ahead of the database's would have every claim refused).
SELECT task_name, cron, enabled, last_tick_at, clock_timestamp() AS db_now
FROM qlarius_schedules

-- name: defer_ticks :many
-- One job for each due tick that no other process deferred first (see qlarius_defer_ticks).
SELECT task_name, tick_at, job_id, missed
FROM qlarius_defer_ticks(%(tasks)s::text[], %(crons)s::text[], %(ticks)s::timestamptz[],
                         %(queues)s::text[], %(missed)s::int[], false)
