-- The populations jobs (populations.py).

-- name: take_pending_target :count
-- The target's pending rows (its criteria or traits changed), consumed by the populate about
-- to read them, in its transaction, before it reads: a change committed later leaves its row.
DELETE FROM qlarius_pending_targets WHERE target_id = %(target_id)s

-- name: leave_pending_target :exec
-- The populate could not run now (a row held elsewhere): the target's pending rows (or a new
-- one) are due again after retry_seconds, when the workers' sweep defers a populate.
WITH later AS (
    UPDATE qlarius_pending_targets
    SET retry_after = now() + make_interval(secs => %(retry_seconds)s)
    WHERE target_id = %(target_id)s
    RETURNING 1
)
INSERT INTO qlarius_pending_targets (target_id, retry_after)
SELECT %(target_id)s, now() + make_interval(secs => %(retry_seconds)s)
WHERE NOT EXISTS (SELECT 1 FROM later)

-- name: lock_target_for_status :one
-- The targets row for the status write, without waiting: an application transaction holding
-- it makes this fail at once (lock_not_available), and the populate tries again a moment
-- later, in a savepoint.
SELECT id FROM targets WHERE id = %(target_id)s FOR NO KEY UPDATE NOWAIT

-- name: mark_target_populated :exec
UPDATE targets
SET population_status = 'populated', last_populated_at = now(), status_before_populating = NULL,
    updated_at = now()
WHERE id = %(target_id)s

-- name: synced_targets_among :many
-- Of the given (free) targets, those whose populations syncs maintain. Read after their scope
-- rows were locked, so a populate that committed before that is seen.
SELECT target_id FROM qlarius_synced_targets
WHERE target_id = ANY(%(target_ids)s::bigint[])
ORDER BY target_id

-- name: band_exists :one
SELECT id FROM target_bands WHERE id = %(band_id)s

-- name: missing_population_ids_of_band :many
-- The next batch of one band's populations with a NULL snapshot, by keyset on id.
SELECT id FROM target_populations
WHERE target_band_id = %(band_id)s AND matching_tags_snapshot IS NULL AND id > %(after_id)s
ORDER BY id
LIMIT %(batch_size)s

-- name: someone_waits_for_this_transaction :one
-- Whether another session waits for a lock this transaction holds: when the populate cannot
-- take its target's row and this is true, the holder of that row may well be waiting for the
-- populate (an application deleting the target waits for its key-share lock), so the populate
-- gives way rather than keep both waiting.
SELECT EXISTS (
    SELECT 1 FROM pg_stat_activity a
    WHERE a.wait_event_type = 'Lock' AND pg_backend_pid() = ANY(pg_blocking_pids(a.pid))
) AS waiting

-- name: bound_lock_waits :one
-- The rest of this transaction (or savepoint) waits at most %(timeout)s for a lock; returns the
-- setting it replaces, for unbound_lock_waits.
SELECT current_setting('lock_timeout') AS previous, set_config('lock_timeout', %(timeout)s, true)

-- name: unbound_lock_waits :exec
SELECT set_config('lock_timeout', %(previous)s, true)
