-- A transaction-level advisory lock, waiting for it (held by every drain batch).
SELECT pg_advisory_xact_lock(%(namespace)s, %(key)s)
