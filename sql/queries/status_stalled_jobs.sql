SELECT job_id, task_name, queue_name AS queue, attempts, worker_id, last_heartbeat, started_at
FROM qlarius_stalled_jobs ORDER BY job_id LIMIT 50
