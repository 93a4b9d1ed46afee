-- A lock timeout for the rest of this transaction only.
SELECT set_config('lock_timeout', %(timeout)s, true)
