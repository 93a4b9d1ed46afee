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

-- 3. Counted as each of our jobs (qlarius_owns_job) leaves 'todo' or 'doing' for another
-- status: one upsert of one row. The WHEN clause keeps every other update (a fetch, another
-- application's jobs) from even calling the function: measured, a statement-level trigger
-- with transition tables cost every UPDATE of the job table (theirs included) a few hundred
-- microseconds. It never fails the status write: an error here (a lock timeout, say) is a
-- warning, and that one count lost.
CREATE FUNCTION qlarius_count_job_ending() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    took float8;
BEGIN
    BEGIN
        IF OLD.status = 'doing' THEN
            SELECT GREATEST(extract(epoch FROM now() - max(at))::float8, 0) INTO took
            FROM procrastinate_events WHERE job_id = NEW.id AND type = 'started';
        END IF;
        INSERT INTO qlarius_job_outcome_counts AS c (task_name, outcome, le, shard, jobs, seconds)
        VALUES (NEW.task_name,
                CASE WHEN NEW.status = 'todo' THEN 'retried' ELSE NEW.status::text END,
                CASE WHEN took IS NULL THEN -1 ELSE COALESCE(
                    (SELECT min(b) FROM unnest(qlarius_job_duration_bounds()) b WHERE took <= b),
                    'Infinity') END,
                pg_backend_pid() % 16, 1, COALESCE(took, 0))
        ON CONFLICT (task_name, outcome, le, shard) DO UPDATE
        SET jobs = c.jobs + 1, seconds = c.seconds + excluded.seconds;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'qlarius: job % ended, but its counters could not be updated: %',
            NEW.id, SQLERRM;
    END;
    RETURN NULL;
END;
$$;
CREATE TRIGGER qlarius_count_job_endings AFTER UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW
    WHEN (OLD.status IN ('todo', 'doing') AND NEW.status IS DISTINCT FROM OLD.status
          AND NEW.status IN ('todo', 'succeeded', 'failed', 'cancelled', 'aborted')
          -- back to 'todo' is a retry only when an attempt was spent (Procrastinate's retry,
          -- the rescue); a lost fetch's job put back (resilience.py) never ran
          AND (NEW.status <> 'todo' OR NEW.attempts > OLD.attempts)
          AND qlarius_owns_job(NEW.task_name, NEW.queue_name))
    EXECUTE FUNCTION qlarius_count_job_ending();
