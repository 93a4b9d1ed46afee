-- Level-triggered work (drains.py): pending rows, the drainer and batch locks, scope locks.
-- {table} is qlarius_pending_syncs or qlarius_pending_reconciles.

-- name: record_pending :one
-- Record pending work in {table} for one MeFile, if it exists (returns no row otherwise).
INSERT INTO {table} (me_file_id)
SELECT id FROM me_files WHERE id = %(me_file_id)s
RETURNING id

-- name: record_pending_many :count
-- Record pending work in {table} for several MeFiles at once (an audit's repairs).
INSERT INTO {table} (me_file_id) SELECT unnest(%(me_file_ids)s::bigint[])

-- name: requeue_pending :exec
-- Put MeFiles that a batch could not finish (an offer locked by the application) back into
-- {table}, keeping their original time; drains leave them alone for retry_seconds.
INSERT INTO {table} (me_file_id, recorded_at, retry_after)
SELECT me_file_id, recorded_at, now() + make_interval(secs => %(retry_seconds)s)
FROM unnest(%(me_file_ids)s::bigint[], %(recorded_at)s::timestamptz[]) AS r(me_file_id, recorded_at)

-- name: wake_drains :exec
-- Wake the workers' drains at commit ('sync' or 'reconcile'): a scope job that held a target
-- leaves work for it that only becomes takeable when it commits.
SELECT pg_notify('qlarius_wakeup', %(kind)s)

-- name: claim_pending :many
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

-- name: finish_drain_batch :one
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

-- name: has_processable_pending :one
-- Is there pending work in {table} that a batch could take now (not only rows waiting for a
-- busy target)? The same free targets as a batch (qlarius_free_targets), so that this never
-- says yes to work a batch cannot take (a drainer would loop on it). Asked after the drainer
-- lease is released, so nothing committed is missed. Rows left for a target that is gone
-- count too: a drain drops them (drop_rows_of_gone_targets).
SELECT EXISTS (
    SELECT 1 FROM {table} p
    WHERE (p.target_id IS NULL
           OR p.target_id IN (SELECT qlarius_free_targets(%(scope)s)))
      AND (p.retry_after IS NULL OR p.retry_after <= now())
) OR EXISTS (
    SELECT 1 FROM {table} p
    WHERE p.target_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM targets t WHERE t.id = p.target_id)
) AS pending

-- name: drop_rows_of_gone_targets :count
-- Rows left for a target (finish_drain_batch) carry no foreign key, so that leaving one never
-- waits for an application deleting that target: once the delete has committed, they are
-- dropped here (its populations and offers went with it).
DELETE FROM {table} p
WHERE p.target_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM targets t WHERE t.id = p.target_id)

-- name: ensure_waiting_job :one
-- Defer a drain job unless one is already waiting, or a drainer holds a live lease (it checks
-- for work again after letting go of it, so it will see whatever woke us). Quiet either way:
-- no unique-violation error in the server log. The lock trigger sets the queueing lock.
INSERT INTO procrastinate_jobs (queue_name, task_name, args)
SELECT %(queue)s, %(task_name)s::text, '{}'::jsonb
WHERE NOT EXISTS (
    SELECT 1 FROM qlarius_drain_leases
    WHERE kind = %(kind)s AND expires_at > clock_timestamp())
ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING
RETURNING id

-- name: acquire_drain_lease :one
-- Become the drainer of a kind, unless another holder's lease is still live. (A row lock
-- held by the live drainer's batch makes this wait for that batch, never longer.)
INSERT INTO qlarius_drain_leases AS l (kind, holder, expires_at)
VALUES (%(kind)s, %(holder)s, clock_timestamp() + make_interval(secs => %(seconds)s))
ON CONFLICT (kind) DO UPDATE
SET holder = EXCLUDED.holder, acquired_at = now(), expires_at = EXCLUDED.expires_at
WHERE l.expires_at <= clock_timestamp() OR l.holder = EXCLUDED.holder
RETURNING holder

-- name: renew_drain_lease :one
-- Keep the lease, in a batch's transaction (no row: it lapsed and another drainer took it).
UPDATE qlarius_drain_leases
SET expires_at = clock_timestamp() + make_interval(secs => %(seconds)s)
WHERE kind = %(kind)s AND holder = %(holder)s
RETURNING holder

-- name: release_drain_lease :exec
DELETE FROM qlarius_drain_leases WHERE kind = %(kind)s AND holder = %(holder)s

-- name: ensure_target_locks :count
-- Create the scope rows a target lacks (one target, or all when target_id is NULL). The
-- trigger on targets creates them, but not for rows written with triggers off (bulk loads,
-- logical replication); until they exist, drains treat the target as busy and defer to it.
INSERT INTO qlarius_target_locks (target_id, scope)
SELECT t.id, s.scope
FROM targets t CROSS JOIN (VALUES ('populations'), ('offers')) s(scope)
WHERE (%(target_id)s::bigint IS NULL OR t.id = %(target_id)s::bigint)
  AND NOT EXISTS (SELECT 1 FROM qlarius_target_locks l WHERE l.target_id = t.id AND l.scope = s.scope)
ON CONFLICT DO NOTHING

-- name: free_target_scopes :many
-- The targets a batch may work on now, locked for its transaction so that none can be taken
-- before it commits (qlarius_free_targets: scope row free, targets row and, for offers, its
-- campaigns' rows not being deleted). Never waits: a busy target is simply not returned.
SELECT target_id FROM qlarius_free_targets(%(scope)s) AS f(target_id)

-- name: lock_target_row :one
-- A scope job keeps its target from being deleted while it runs (updates are not blocked):
-- taken first, before any row the delete would cascade into. SKIP LOCKED: a target being
-- deleted right now is not waited for (target_exists then tells busy from gone).
SELECT id FROM targets WHERE id = %(target_id)s FOR KEY SHARE SKIP LOCKED

-- name: lock_target_parts :one
-- Whether the target's bands (and, for the offers scope, its campaigns and media runs) are all
-- free to be referenced, none being deleted; key-share locked for the transaction.
SELECT qlarius_lock_target_parts(%(target_id)s, %(scope)s) AS free

-- name: target_exists :one
SELECT EXISTS (SELECT 1 FROM targets WHERE id = %(target_id)s) AS present

-- name: lock_target_scope :one
-- A scope job takes its target's scope row for its whole transaction (waits for holders).
SELECT target_id FROM qlarius_target_locks
WHERE target_id = %(target_id)s AND scope = %(scope)s
FOR UPDATE

-- name: try_lock_target_scope :one
-- The same, only if no one holds it (taken under the batch barrier; see scopes.py).
SELECT target_id FROM qlarius_target_locks
WHERE target_id = %(target_id)s AND scope = %(scope)s
FOR UPDATE SKIP LOCKED

-- name: advisory_lock :exec
-- A session-level advisory lock, waiting for it: the scope jobs' brief batch barrier, taken
-- and released inside one transaction (so on one server session, even behind a pooler).
SELECT pg_advisory_lock(%(namespace)s, %(key)s)

-- name: advisory_unlock :one
SELECT pg_advisory_unlock(%(namespace)s, %(key)s) AS unlocked

-- name: advisory_xact_lock :exec
-- A transaction-level advisory lock, waiting for it (held by every drain batch).
SELECT pg_advisory_xact_lock(%(namespace)s, %(key)s)
