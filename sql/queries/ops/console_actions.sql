-- The console's action log (console_actions.py): qlarius_console_actions, migration 0020.

-- name: record_console_action :exec
-- One row for one action, however many jobs, targets or names it touched.
INSERT INTO qlarius_console_actions (actor, kind, action, ids, names, count, detail)
VALUES (%(actor)s, %(kind)s, %(action)s, %(ids)s::bigint[], %(names)s::text[], %(count)s,
        %(detail)s)

-- name: console_actions :many
-- The log, newest first, a page at a time (keyset: ids below the last of the page before).
SELECT id, at, actor, kind, action, ids, names, count, detail
FROM qlarius_console_actions
WHERE %(before)s::bigint IS NULL OR id < %(before)s
ORDER BY id DESC LIMIT %(limit)s

-- name: job_console_actions :many
-- The actions that named a job, newest first.
SELECT id, at, actor, kind, action, ids, names, count, detail
FROM qlarius_console_actions
WHERE kind = 'job' AND ids @> ARRAY[%(id)s::bigint]
ORDER BY id DESC LIMIT %(limit)s
