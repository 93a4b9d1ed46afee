-- End of a drain batch of {table}: (1) the MeFiles whose rows for every target were taken get
-- a row per target that was not free (a scope job holds it, or it has no scope row yet), to
-- be applied once it is; (2) every row taken is counted in the change-lag histogram (commit
-- of the change -> now).
WITH deferred AS (
    INSERT INTO {table} (me_file_id, target_id, recorded_at)
    SELECT d.me_file_id, t.id, d.recorded_at
    FROM unnest(%(deferred_me_file_ids)s::bigint[], %(deferred_recorded_at)s::timestamptz[])
         AS d(me_file_id, recorded_at)
    JOIN targets t ON t.id <> ALL(%(free_targets)s::bigint[])
    RETURNING 1
),
lags AS (
    SELECT extract(epoch FROM clock_timestamp() - r.at) * 1000 AS ms
    FROM unnest(%(recorded_at)s::timestamptz[]) r(at)
),
observed AS (
    -- cumulative buckets, Prometheus' shape; 9223372036854775807 stands for +Inf
    INSERT INTO qlarius_change_lag AS h (kind, le_ms, changes)
    SELECT %(kind)s, b.le_ms, count(lags.ms)
    FROM unnest(ARRAY[10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
                      9223372036854775807]::bigint[]) b(le_ms)
    LEFT JOIN lags ON lags.ms <= b.le_ms
    GROUP BY b.le_ms
    ON CONFLICT (kind, le_ms) DO UPDATE SET changes = h.changes + EXCLUDED.changes
    RETURNING 1
)
SELECT (SELECT count(*) FROM deferred) AS deferred,
       (SELECT max(ms) FROM lags)::bigint AS max_lag_ms,
       (SELECT count(*) FROM observed) AS buckets
