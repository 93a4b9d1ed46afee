-- Take the next batch of pending work from {table}: up to batch_size rows, oldest first, that
-- concern every target or a free one; then every visible row of those MeFiles that is
-- processable now. Deleted here and applied by the next statements of the same transaction,
-- whose snapshot is later: every change deleted here is seen there.
WITH first_rows AS (
    SELECT me_file_id FROM {table}
    WHERE (target_id IS NULL OR target_id = ANY(%(free_targets)s::bigint[]))
      AND (retry_after IS NULL OR retry_after <= now())
    ORDER BY id
    LIMIT %(batch_size)s
)
DELETE FROM {table} p
WHERE p.me_file_id IN (SELECT me_file_id FROM first_rows)
  AND (p.target_id IS NULL OR p.target_id = ANY(%(free_targets)s::bigint[]))
  AND (p.retry_after IS NULL OR p.retry_after <= now())
RETURNING p.me_file_id, p.target_id, p.recorded_at
