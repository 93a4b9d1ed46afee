-- name: read_only :exec
-- The first statement of every read of the console and of /metrics: this transaction can
-- write nothing, whichever server it is on (transaction-scoped: fine behind a pooler).
SET TRANSACTION READ ONLY

-- name: replica_status :one
-- How far behind the read server is: 0 while it streams from the primary and has replayed
-- all it received (an idle primary commits nothing, so the time since the last replayed
-- commit would grow without any lag); else the time since the last transaction it replayed
-- was committed on the primary (NULL: none replayed since it started). Whether replay is
-- paused, and whether it has replayed the WAL position an operator's last action reached
-- (NULL when no action is known). A server not in recovery is the primary itself: 0 behind.
-- pg_stat_wal_receiver shows its status only to pg_read_all_stats (or a superuser): without
-- it the lag is the time since the last replayed commit, never a false 0.
SELECT in_recovery,
       CASE WHEN NOT in_recovery OR caught_up THEN 0.0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
       END AS lag_seconds,
       in_recovery AND caught_up AS caught_up,
       CASE WHEN in_recovery THEN pg_is_wal_replay_paused() ELSE false END AS paused,
       CASE WHEN %(wrote)s::pg_lsn IS NULL THEN NULL
            WHEN in_recovery THEN pg_last_wal_replay_lsn() >= %(wrote)s::pg_lsn
            ELSE true END AS replayed_action
FROM (SELECT pg_is_in_recovery() AS in_recovery,
             coalesce(pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
                      AND EXISTS (SELECT FROM pg_stat_wal_receiver WHERE status = 'streaming'),
                      false) AS caught_up) AS server

-- name: wal_position :one
-- Where the primary's WAL is now, read after an action committed: a standby that replayed
-- this far shows the action.
SELECT pg_current_wal_insert_lsn()::text AS lsn

-- name: primary_up :one
-- Whether the primary answers (/metrics' qlarius_database_up while the pages read a standby).
SELECT 1 AS up
