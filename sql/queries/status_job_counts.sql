SELECT queue_name AS queue, status, jobs, earliest_scheduled FROM qlarius_job_counts
