-- Put MeFiles that a batch could not finish (an offer locked by the application) back into
-- {table}, keeping their original time; drains leave them alone for retry_seconds.
INSERT INTO {table} (me_file_id, recorded_at, retry_after)
SELECT me_file_id, recorded_at, now() + make_interval(secs => %(retry_seconds)s)
FROM unnest(%(me_file_ids)s::bigint[], %(recorded_at)s::timestamptz[]) AS r(me_file_id, recorded_at)
