-- What /metrics reads, each scrape (metrics.py): one scrape covers every worker process on
-- every machine, since it all lives in the database. The console's overview reads the first
-- three as well.

-- name: jobs_by_queue_and_state :many
-- Waiting and running jobs exactly (an index-only scan of qlarius_jobs_waiting_running_idx,
-- migration 0025). The finished states exactly too while the table holds fewer than
-- %(exact_below)s rows (by the planner's own reckoning: its last row count scaled to the
-- table's size now), or while no ANALYZE has sampled it since 0025; above, estimated
-- (``estimated``): the table's rows times each (queue, state) pair's share in the extended
-- statistics (qlarius_job_count_shares), as of the last ANALYZE. Only one of the two
-- finished branches runs (a one-time filter). Columns: queue, state, jobs, estimated.
WITH size AS (
    SELECT CASE WHEN c.relpages > 0 AND c.reltuples >= 0
                THEN c.reltuples / c.relpages
                     * (pg_relation_size(c.oid) / current_setting('block_size')::float8)
                ELSE 0 END AS rows
    FROM pg_class c WHERE c.oid = 'procrastinate_jobs'::regclass
), shares AS MATERIALIZED (
    SELECT queue, state, share FROM qlarius_job_count_shares()
), small AS (
    SELECT rows < %(exact_below)s OR NOT EXISTS (SELECT 1 FROM shares) AS exact, rows FROM size
)
SELECT queue_name::text AS queue, status::text AS state, count(*) AS jobs, false AS estimated
FROM procrastinate_jobs WHERE status IN ('todo', 'doing')
GROUP BY queue_name, status
UNION ALL
SELECT queue_name::text, status::text, count(*), false
FROM procrastinate_jobs
WHERE status NOT IN ('todo', 'doing') AND (SELECT exact FROM small)
GROUP BY queue_name, status
UNION ALL
SELECT queue, state, round(share * (SELECT rows FROM small))::bigint, true
FROM shares
WHERE state NOT IN ('todo', 'doing') AND NOT (SELECT exact FROM small)
ORDER BY 1, 2

-- name: oldest_waiting_jobs :many
-- Per queue, the oldest job that is due and waiting, and how long it has waited.
-- Columns: queue, job_id, waiting_seconds.
SELECT q.queue, w.id AS job_id,
       extract(epoch FROM now() - COALESCE(w.scheduled_at, d.at))::float8 AS waiting_seconds
FROM (SELECT DISTINCT queue_name AS queue FROM procrastinate_jobs WHERE status = 'todo') q
CROSS JOIN LATERAL (
    SELECT id, scheduled_at FROM procrastinate_jobs
    WHERE queue_name = q.queue AND status = 'todo'
      AND (scheduled_at IS NULL OR scheduled_at <= now())
    ORDER BY id LIMIT 1
) w
LEFT JOIN LATERAL (
    SELECT min(at) AS at FROM procrastinate_events WHERE job_id = w.id AND type = 'deferred'
) d ON true
ORDER BY q.queue

-- name: null_snapshot_counts :one
SELECT target_populations, offers, ad_events FROM qlarius_null_snapshot_counts

-- name: pending_work :many
-- Level-triggered work waiting for the drains, per kind (both kinds always: 0 when none).
-- Columns: kind, pending, waiting_for_a_target, oldest_s.
SELECT kind, pending, waiting_for_a_target, COALESCE(oldest_s, 0)::float8 AS oldest_s
FROM qlarius_pending_work ORDER BY kind

-- name: metrics_stalled :one
SELECT count(*) AS jobs FROM qlarius_stalled_jobs

-- name: metrics_backfill_fixed :one
-- Rows the backfill fixed, over the runs kept (QLARIUS_BACKFILL_HISTORY_DAYS).
SELECT COALESCE(sum(updated_populations), 0) AS target_populations,
       COALESCE(sum(updated_offers), 0) AS offers,
       COALESCE(sum(updated_ad_events), 0) AS ad_events
FROM backfill_runs

-- name: metrics_job_outcomes :many
-- How our jobs ended since the counters began (migration 0017), per task and outcome, the
-- shards summed; every task given (%(tasks)s) and every outcome has a series, 0 when none.
-- Columns: task, outcome, jobs.
SELECT s.task, s.outcome, COALESCE(sum(c.jobs), 0)::bigint AS jobs
FROM (SELECT t.task, o.outcome
      FROM unnest(%(tasks)s::text[]) t(task)
      CROSS JOIN unnest(ARRAY['succeeded', 'failed', 'aborted', 'retried', 'cancelled']) o(outcome)
      UNION
      SELECT task_name, outcome FROM qlarius_job_outcome_counts) s
LEFT JOIN qlarius_job_outcome_counts c ON c.task_name = s.task AND c.outcome = s.outcome
GROUP BY s.task, s.outcome
ORDER BY s.task, s.outcome

-- name: metrics_job_durations :many
-- The cumulative histogram of the attempts' durations (migration 0017), per task and
-- outcome, every task given and every outcome that has a duration: for each bound (and
-- 'Infinity'), the attempts that took at most that long, and all their seconds.
-- Columns: task, outcome, le, below, seconds.
WITH timed AS (
    SELECT task_name AS task, outcome, le, sum(jobs) AS jobs, sum(seconds) AS seconds
    FROM qlarius_job_outcome_counts WHERE le >= 0 GROUP BY task_name, outcome, le
), series AS (
    SELECT t.task, o.outcome
    FROM unnest(%(tasks)s::text[]) t(task)
    CROSS JOIN unnest(ARRAY['succeeded', 'failed', 'aborted', 'retried']) o(outcome)
    UNION
    SELECT task, outcome FROM timed
)
SELECT s.task, s.outcome, b.le,
       COALESCE(sum(t.jobs) FILTER (WHERE t.le <= b.le), 0)::float8 AS below,
       COALESCE(sum(t.seconds), 0)::float8 AS seconds
FROM series s
CROSS JOIN unnest(qlarius_job_duration_bounds() || 'Infinity'::float8) b(le)
LEFT JOIN timed t ON t.task = s.task AND t.outcome = s.outcome
GROUP BY s.task, s.outcome, b.le
ORDER BY s.task, s.outcome, b.le

-- name: metrics_last_audit :one
-- The drift the latest audit found (the latest backfill run whose own part ended with a
-- sample audited), by kind, and when it ran; no row when none did.
SELECT extract(epoch FROM started_at)::float8 AS at, audited_me_files,
       drifted_populations AS drifted_population, stale_snapshots AS stale_snapshot,
       offers_without_eligibility AS offer_without_eligibility, eligible_without_offer,
       stale_offer_snapshots AS stale_offer_snapshot, stale_offer_amounts AS stale_offer_amount,
       offers_of_campaigns_not_live AS offer_of_a_campaign_not_live
FROM backfill_runs
WHERE own_part_ended AND audited_me_files > 0
ORDER BY started_at DESC, id DESC
LIMIT 1

-- name: metrics_queues_paused :many
-- Every queue's row of qlarius_queue_controls: 1 when paused. Columns: queue, paused.
SELECT queue_name AS queue, paused::int AS paused FROM qlarius_queue_controls
ORDER BY queue_name

-- name: metrics_tasks_paused :many
-- Every task's row of qlarius_task_controls: 1 when paused. Columns: task, paused.
SELECT task_name AS task, paused::int AS paused FROM qlarius_task_controls ORDER BY task_name

-- name: metrics_schedules :many
-- Every schedule: 1 when enabled, and its latest tick in the ledger (cron or run now; the
-- prune keeps each schedule's latest), as a Unix time, 0 when it never ticked.
-- Columns: task, enabled, last_tick.
SELECT task_name AS task, enabled::int AS enabled,
       COALESCE(extract(epoch FROM last_deferred_at), 0)::float8 AS last_tick
FROM qlarius_schedule_last_ticks ORDER BY task_name
