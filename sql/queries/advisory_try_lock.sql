-- A session-level advisory lock, if free (the drainer lock: one active drainer per kind).
SELECT pg_try_advisory_lock(%(namespace)s, %(key)s) AS locked
