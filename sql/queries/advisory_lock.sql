-- A session-level advisory lock, waiting for it (the scope jobs' brief batch barrier).
SELECT pg_advisory_lock(%(namespace)s, %(key)s)
