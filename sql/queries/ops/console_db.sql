-- name: read_only :exec
-- The first statement of every read of the console and of /metrics: this transaction can
-- write nothing, whichever server it is on (transaction-scoped: fine behind a pooler).
SET TRANSACTION READ ONLY

-- name: replica_status :one
-- How far behind the read server is: the time since the last transaction it replayed was
-- committed on the primary (NULL: none replayed since it started), whether replay is paused,
-- and whether it has replayed the WAL position an operator's last action reached (NULL when
-- no action is known). A server that is not in recovery is the primary itself: 0 s behind.
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery()
            THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
            ELSE 0.0 END AS lag_seconds,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END AS paused,
       CASE WHEN %(wrote)s::pg_lsn IS NULL THEN NULL
            WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() >= %(wrote)s::pg_lsn
            ELSE true END AS replayed_action

-- name: wal_position :one
-- Where the primary's WAL is now, read after an action committed: a standby that replayed
-- this far shows the action.
SELECT pg_current_wal_insert_lsn()::text AS lsn

-- name: primary_up :one
-- Whether the primary answers (/metrics' qlarius_database_up while the pages read a standby).
SELECT 1 AS up
