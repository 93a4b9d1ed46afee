-- The console's pages (console_pages.py). Every value a user typed is a parameter.

-- name: overview_last_hour_by_task :many
-- Jobs that ended in the last hour, per task and outcome. Columns: task, succeeded, failed,
-- aborted. Each ending's task is read by its job's id (a subquery per event, never a join
-- the planner may turn into a hash of the whole job table: 300 ms at a million jobs, seconds
-- at ten); the endings come from qlarius_events_ends_idx (migration 0025).
-- (Materialized: a filter on the task pushed down would run the subquery twice per event.)
WITH ended AS MATERIALIZED (
    SELECT e.type, (SELECT j.task_name FROM procrastinate_jobs j WHERE j.id = e.job_id) AS task
    FROM procrastinate_events e
    WHERE e.at > now() - interval '1 hour' AND e.type IN ('succeeded', 'failed', 'aborted')
)
SELECT task,
       count(*) FILTER (WHERE type = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE type = 'failed') AS failed,
       count(*) FILTER (WHERE type = 'aborted') AS aborted
FROM ended
WHERE task IS NOT NULL
GROUP BY task ORDER BY task

-- name: running_jobs :many
-- Columns: id, queue, task, attempts, worker_id, host, pid, started_at.
SELECT j.id, j.queue_name AS queue, j.task_name AS task, j.attempts, j.worker_id, wq.host, wq.pid,
       (SELECT max(at) FROM procrastinate_events e WHERE e.job_id = j.id AND e.type = 'started')
           AS started_at
FROM procrastinate_jobs j LEFT JOIN qlarius_worker_queues wq ON wq.worker_id = j.worker_id
WHERE j.status = 'doing' ORDER BY j.id LIMIT 100

-- name: stalled_jobs :many
SELECT job_id, task_name AS task, queue_name AS queue, attempts, worker_id, last_heartbeat,
       started_at
FROM qlarius_stalled_jobs ORDER BY job_id LIMIT 50

-- name: jobs_per_minute :many
-- Jobs that ended, per minute and outcome, over the last hours. Columns: minute, type, jobs.
SELECT date_trunc('minute', at) AS minute, type::text AS type, count(*) AS jobs
FROM procrastinate_events
WHERE at > now() - make_interval(hours => %(hours)s)
  AND type IN ('succeeded', 'failed', 'aborted')
GROUP BY 1, 2 ORDER BY 1

-- name: backfill_chart :many
-- Backfill runs over the last days, oldest first. Columns: started_at, found, fixed.
SELECT started_at,
       COALESCE(found_populations, 0) + COALESCE(found_offers, 0)
           + COALESCE(found_ad_events, 0) AS found,
       updated_populations + updated_offers + updated_ad_events AS fixed
FROM backfill_runs WHERE started_at > now() - make_interval(days => %(days)s)
ORDER BY started_at

-- name: backfill_runs :many
-- chunks_deferred: the chunk jobs a run deferred (what the page's "chunks" shows), not its
-- batches.
SELECT id, job_id, started_at, finished_at, found_populations, found_offers, found_ad_events,
       updated_populations, updated_offers, updated_ad_events, orphan_offers, orphan_ad_events,
       batches, chunks_deferred, budget_exhausted, elapsed_ms
FROM backfill_runs
WHERE %(before)s::bigint IS NULL OR id < %(before)s
ORDER BY id DESC LIMIT %(limit)s

-- name: targets :many
-- Each target: status, members per band, NULL snapshots, last populated.
-- Columns: id, title, population_status, last_populated_at, bands (json: id, title,
-- bullseye, members), members, null_snapshots.
SELECT t.id, t.title, t.population_status, t.last_populated_at,
       COALESCE(jsonb_agg(jsonb_build_object(
           'id', b.id, 'title', b.title, 'bullseye', b.is_bullseye,
           'members', (SELECT count(*) FROM target_populations tp WHERE tp.target_band_id = b.id))
           ORDER BY b.id) FILTER (WHERE b.id IS NOT NULL), '[]') AS bands,
       (SELECT count(*) FROM target_populations tp JOIN target_bands bb ON bb.id = tp.target_band_id
        WHERE bb.target_id = t.id) AS members,
       (SELECT count(*) FROM target_populations tp JOIN target_bands bb ON bb.id = tp.target_band_id
        WHERE bb.target_id = t.id AND tp.matching_tags_snapshot IS NULL) AS null_snapshots
FROM targets t LEFT JOIN target_bands b ON b.target_id = t.id
GROUP BY t.id ORDER BY t.id LIMIT 500

-- name: target_exists :one
SELECT id FROM targets WHERE id = %(id)s::bigint

-- name: workers :many
-- Live workers: their queue, where they run, their heartbeat, what they run now.
-- Columns: id, last_heartbeat, queue, host, pid, concurrency, running, heartbeat_age_seconds.
SELECT w.id, w.last_heartbeat, wq.queue, wq.host, wq.pid, wq.concurrency,
       (SELECT count(*) FROM procrastinate_jobs j WHERE j.worker_id = w.id AND j.status = 'doing')
           AS running,
       extract(epoch FROM now() - w.last_heartbeat)::bigint AS heartbeat_age_seconds
FROM procrastinate_workers w LEFT JOIN qlarius_worker_queues wq ON wq.worker_id = w.id
ORDER BY w.id

-- name: job_locks :many
-- Other jobs that share this job's lock or queueing lock (what it waits behind).
-- Columns: id, task, state, lock, queueing_lock.
SELECT id, task_name AS task, status::text AS state, lock, queueing_lock
FROM procrastinate_jobs
WHERE id <> %(id)s::bigint AND status IN ('todo', 'doing')
  AND ((%(lock)s::text IS NOT NULL AND lock = %(lock)s)
       OR (%(queueing_lock)s::text IS NOT NULL AND queueing_lock = %(queueing_lock)s))
ORDER BY id LIMIT 20

-- name: last_audit :one
-- The drift audit of the latest backfill run whose own part ended (where its audit's counts
-- are recorded) and that audited a sample. Columns: run_id, started_at, finished_at,
-- audited_me_files, and each finding's count.
SELECT id AS run_id, started_at, finished_at, audited_me_files, drifted_populations,
       stale_snapshots, offers_without_eligibility, eligible_without_offer,
       stale_offer_snapshots, stale_offer_amounts, offers_of_campaigns_not_live
FROM backfill_runs
WHERE own_part_ended AND audited_me_files > 0
ORDER BY id DESC LIMIT 1
