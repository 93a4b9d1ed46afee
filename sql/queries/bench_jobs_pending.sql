-- Benchmark: work left for the given queues (all when NULL): jobs waiting or running, and the
-- pending syncs (queue targets) or reconciles (queue offers) their drains would take.
SELECT (SELECT count(*) FROM procrastinate_jobs
        WHERE status IN ('todo', 'doing')
          AND (%(queues)s::text[] IS NULL OR queue_name = ANY(%(queues)s::text[])))
     + (SELECT count(*) FROM qlarius_pending_syncs
        WHERE %(queues)s::text[] IS NULL OR 'targets' = ANY(%(queues)s::text[]))
     + (SELECT count(*) FROM qlarius_pending_reconciles
        WHERE %(queues)s::text[] IS NULL OR 'offers' = ANY(%(queues)s::text[])) AS pending
