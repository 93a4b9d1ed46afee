-- Cumulative counters of how our jobs end, and how long their attempts took, kept in the
-- database (Prometheus' counter and histogram shapes): they cover every worker on every
-- machine, survive restarts, and keep counting when the prune deletes finished jobs, so
-- rate() and histogram_quantile() over /metrics mean what they say.

-- 1. The buckets' upper bounds, in seconds (the +Inf bucket is 'Infinity').
CREATE FUNCTION qlarius_job_duration_bounds() RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '{0.01,0.05,0.1,0.5,1,5,30,120,600,1800}'::float8[]
$$;

-- 2. One row per task, outcome, bucket and shard: the jobs that ended so, and the seconds
-- their attempts took. Not cumulative over buckets here (/metrics sums them up).
-- outcome: succeeded, failed, aborted (an attempt's end), retried (an attempt failed and the
-- job waits for another), cancelled (ended before it started).
-- le: the smallest bound at least the attempt's duration (from its last 'started' event);
-- -1 when it has none (a cancel before the start): counted, never in the histogram.
-- shard: the writer's backend pid modulo 16, so that workers ending jobs of one task at once
-- update different rows instead of queueing on one (/metrics sums the shards).
CREATE TABLE qlarius_job_outcome_counts (
    task_name text NOT NULL,
    outcome text NOT NULL,
    le float8 NOT NULL,
    shard smallint NOT NULL,
    jobs bigint NOT NULL DEFAULT 0,
    seconds float8 NOT NULL DEFAULT 0,
    PRIMARY KEY (task_name, outcome, le, shard)
);

-- 3. Counted after each UPDATE statement on the job table, set-based: one upsert per
-- (task, outcome, bucket) of the statement, rows in key order (no deadlock between two
-- statements). Our jobs only (qlarius_owns_job); a status leaving 'todo' or 'doing' for
-- another. It never fails the status write: an error here is a warning, and that count lost.
-- (Transition tables rule out a column list or a WHEN clause: the statement's rows are
-- filtered inside, which for another application's update is one empty join.)
CREATE FUNCTION qlarius_count_job_endings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        INSERT INTO qlarius_job_outcome_counts AS c (task_name, outcome, le, shard, jobs, seconds)
        SELECT e.task_name, e.outcome,
               CASE WHEN e.seconds IS NULL THEN -1 ELSE COALESCE(
                   (SELECT min(b) FROM unnest(qlarius_job_duration_bounds()) b
                    WHERE e.seconds <= b), 'Infinity') END AS le,
               pg_backend_pid() % 16, count(*), COALESCE(sum(e.seconds), 0)
        FROM (
            SELECT n.task_name,
                   CASE WHEN n.status = 'todo' THEN 'retried' ELSE n.status::text END AS outcome,
                   CASE WHEN o.status = 'doing' THEN GREATEST(extract(epoch FROM now() - (
                       SELECT max(ev.at) FROM procrastinate_events ev
                       WHERE ev.job_id = n.id AND ev.type = 'started'))::float8, 0) END AS seconds
            FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE o.status IN ('todo', 'doing') AND n.status IS DISTINCT FROM o.status
              AND n.status IN ('todo', 'succeeded', 'failed', 'cancelled', 'aborted')
              AND qlarius_owns_job(n.task_name, n.queue_name)
        ) e
        GROUP BY 1, 2, 3
        ORDER BY 1, 2, 3
        ON CONFLICT (task_name, outcome, le, shard) DO UPDATE
        SET jobs = c.jobs + excluded.jobs, seconds = c.seconds + excluded.seconds;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'qlarius: jobs ended, but their counters could not be updated: %', SQLERRM;
    END;
    RETURN NULL;
END;
$$;
CREATE TRIGGER qlarius_count_job_endings AFTER UPDATE ON procrastinate_jobs
    REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qlarius_count_job_endings();
