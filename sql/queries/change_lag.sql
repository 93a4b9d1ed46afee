-- The change-lag histogram of one drain kind (cumulative buckets).
SELECT le_ms, changes FROM qlarius_change_lag WHERE kind = %(kind)s ORDER BY le_ms
