-- Oban's Lifeline: running jobs whose worker stopped sending heartbeats go back to the queue
-- (or fail, when that was their last attempt), once: the row lock and SKIP LOCKED keep two
-- rescuers from taking the same job. A killed run counts as an attempt and is recorded in the
-- error history. Live workers heartbeat every few seconds, so their jobs are never touched.
WITH stalled AS (
    SELECT j.id, j.task_name, j.attempts
    FROM procrastinate_jobs j
    LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
    WHERE j.status = 'doing'
      AND (w.id IS NULL
           OR w.last_heartbeat < now() - make_interval(secs => %(stalled_after_seconds)s))
    ORDER BY j.id
    FOR UPDATE OF j SKIP LOCKED
),
decided AS (
    SELECT s.id, s.task_name, s.attempts,
           s.attempts + 1 < COALESCE(l.max_attempts, 1) AS retry
    FROM stalled s
    LEFT JOIN unnest(%(task_names)s::text[], %(max_attempts)s::int[]) AS l(task_name, max_attempts)
      ON l.task_name = s.task_name
),
recorded AS (
    INSERT INTO qlarius_job_errors (job_id, task_name, attempt, error_type, message)
    SELECT id, task_name, attempts + 1, 'WorkerLost',
           'the worker running this job stopped sending heartbeats (killed or lost); '
           || CASE WHEN retry THEN 'rescued: queued again' ELSE 'no attempt left: failed' END
    FROM decided
)
SELECT d.id, d.task_name, d.retry,
       CASE WHEN d.retry
            THEN procrastinate_retry_job_v2(d.id, now(), NULL, NULL, NULL)::text
            ELSE procrastinate_finish_job_v1(d.id, 'failed', false)::text END AS done
FROM decided d
ORDER BY d.id
