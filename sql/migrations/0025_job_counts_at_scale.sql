-- Jobs by queue and state on a table of millions (issue 21). The overview and /metrics counted
-- every row by an index-only scan of qlarius_jobs_queue_status_idx: ~10 million index entries
-- a render at 10M jobs, seconds rather than the 300 ms the console is allowed. What matters
-- at once (waiting, running) stays exact and cheap; the finished states of a large table are
-- estimated from the planner's statistics (sql/queries/ops/metrics.sql, jobs_by_queue_and_state).
--
-- Both are additions to procrastinate_jobs (shared with other applications, migration 0012):
-- they change no row, no constraint and no query's answer; both are made only when absent
-- (build the index beforehand with CREATE INDEX CONCURRENTLY on a large live table, as 0018
-- says for its own).

-- 1. Waiting and running jobs by queue and state: an index holding only those rows (a few
-- thousand, whatever the number of finished jobs), read by an index-only scan.
CREATE INDEX IF NOT EXISTS qlarius_jobs_waiting_running_idx
    ON procrastinate_jobs (queue_name, status) WHERE status IN ('todo', 'doing');

-- 2. The joint distribution of (queue, state), sampled by ANALYZE (autovacuum's, on a table
-- of millions at least every few hundred thousand changed rows): its most common pairs and
-- their share of the table are the estimates of the finished states' counts.
CREATE STATISTICS IF NOT EXISTS qlarius_jobs_queue_status_stats (mcv)
    ON queue_name, status FROM procrastinate_jobs;

-- Those pairs and shares, for any role that may read the counts: pg_stats_ext shows a
-- table's extended statistics only to members of its owner's role (a console connecting
-- as a read-only role would see none), so this function reads them as its owner, the role
-- that migrates. No rows until the first ANALYZE after this migration.
CREATE FUNCTION qlarius_job_count_shares() RETURNS TABLE (queue text, state text, share float8)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT s.most_common_vals[i][1], s.most_common_vals[i][2], s.most_common_freqs[i]
    FROM pg_catalog.pg_stats_ext s
    CROSS JOIN LATERAL generate_subscripts(s.most_common_freqs, 1) i
    WHERE s.statistics_name = 'qlarius_jobs_queue_status_stats'
      AND s.tablename = 'procrastinate_jobs'
$$;

-- 3. Jobs' endings by time (the overview's chart of jobs per minute and its last hour per
-- task): the ending events alone, with their type, so that both read only the index (events
-- are only ever inserted, so the visibility map keeps up) instead of every event of the
-- period, deferrals and starts included, from the table.
CREATE INDEX IF NOT EXISTS qlarius_events_ends_idx
    ON procrastinate_events (at, type) WHERE type IN ('succeeded', 'failed', 'aborted');
