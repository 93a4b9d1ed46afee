SELECT pg_advisory_unlock(%(namespace)s, %(key)s) AS unlocked
