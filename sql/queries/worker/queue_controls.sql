-- The queue controls each worker process follows (worker/queue_controls.py).

-- name: queue_controls :many
-- The controls of these queues, and (on every row) the tasks paused now.
SELECT c.queue_name, c.paused, c.concurrency,
       ARRAY(SELECT t.task_name FROM qlarius_task_controls t WHERE t.paused) AS paused_tasks
FROM unnest(%(queues)s::text[]) AS q(queue_name)
LEFT JOIN qlarius_queue_controls c ON c.queue_name = q.queue_name
