SELECT count(*) AS pending FROM procrastinate_jobs
WHERE status IN ('todo', 'doing') AND (%(queues)s::text[] IS NULL OR queue_name = ANY(%(queues)s::text[]))
