-- The queue controls each worker process follows (worker/queue_controls.py).

-- name: queue_controls :many
SELECT queue_name, paused, concurrency FROM qlarius_queue_controls
WHERE queue_name = ANY(%(queues)s::text[])
