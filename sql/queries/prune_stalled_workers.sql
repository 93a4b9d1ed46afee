-- Worker rows without a heartbeat for long: their jobs were rescued above.
DELETE FROM procrastinate_workers
WHERE last_heartbeat < now() - make_interval(secs => %(stalled_after_seconds)s)
RETURNING id
