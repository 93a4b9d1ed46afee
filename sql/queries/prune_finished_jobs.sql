-- One bounded batch of finished jobs whose last event is older than the retention, by keyset
-- over ids (events and error history go with them: ON DELETE CASCADE). Short transactions,
-- short locks: the caller loops.
WITH candidates AS (
    SELECT j.id
    FROM procrastinate_jobs j
    WHERE j.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
      AND j.id > %(after_id)s
    ORDER BY j.id
    LIMIT %(batch_size)s
),
doomed AS (
    SELECT c.id FROM candidates c
    WHERE NOT EXISTS (
        SELECT 1 FROM procrastinate_events e
        WHERE e.job_id = c.id AND e.at >= now() - make_interval(days => %(retention_days)s))
),
deleted AS (
    DELETE FROM procrastinate_jobs j USING doomed d WHERE j.id = d.id RETURNING j.id
)
SELECT (SELECT max(id) FROM candidates) AS last_candidate, (SELECT count(*) FROM deleted) AS deleted
