SELECT at, job_id, task_name, attempt, error_type, left(message, 120) AS message, job_status
FROM qlarius_recent_job_errors LIMIT %(limit)s
