-- Defer a drain job unless one is already waiting, or a drainer is at work (it checks for
-- work again after letting go of its lock, so it will see whatever woke us). Quiet either
-- way: no unique-violation error in the server log. The lock trigger sets the queueing lock.
INSERT INTO procrastinate_jobs (queue_name, task_name, args)
SELECT %(queue)s, %(task_name)s::text, '{}'::jsonb
WHERE %(even_if_draining)s OR NOT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 2
      AND classid = %(namespace)s AND objid = %(drainer_key)s)
ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING
RETURNING id
