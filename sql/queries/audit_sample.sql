-- A random sample of MeFile ids (uniform over the id range, index probes, no sort of the
-- table). The draw refers to the series row, so it is drawn again for each one (an
-- uncorrelated subquery would be evaluated once: one id, size times).
WITH bounds AS (SELECT min(id) AS lo, max(id) AS hi FROM me_files)
SELECT DISTINCT m.id
FROM bounds, generate_series(1, %(size)s * 2) g
CROSS JOIN LATERAL (
    SELECT id FROM me_files
    WHERE id >= bounds.lo + floor(random() * (bounds.hi - bounds.lo + 1)) + 0 * g
    ORDER BY id LIMIT 1
) m
LIMIT %(size)s
