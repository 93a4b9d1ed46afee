-- The populations jobs (populations.py).

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
