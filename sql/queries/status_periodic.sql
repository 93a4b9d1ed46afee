SELECT task_name, last_tick, job_id, last_job_status FROM qlarius_periodic_last_defers
