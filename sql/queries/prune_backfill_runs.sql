DELETE FROM backfill_runs
WHERE started_at < now() - make_interval(days => %(retention_days)s)
