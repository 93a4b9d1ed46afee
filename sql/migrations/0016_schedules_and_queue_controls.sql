-- Schedules and queue controls live in Postgres (as Oban's and River's do): every worker
-- process follows these tables, on every machine, without a restart.
--
-- qlarius_schedules      one row per periodic job: its cron expression, enabled or not, and
--                        the last tick a job was deferred for (the once-per-tick guard)
-- qlarius_schedule_ticks the ledger: one row per tick deferred (or run now), with its job
-- qlarius_queue_controls one row per queue: paused or not, and a concurrency override
-- qlarius_task_controls  one row per task: paused or not
--
-- `qlarius-jobs migrate` fills the rows from the settings the first time (the settings are
-- defaults); after that, these rows are the one source of truth. A change NOTIFYs
-- qlarius_wakeup ('controls') at commit; workers also poll, as the safety net.

-- 1. Cron expressions, checked where they are stored: one that does not parse, or never
-- fires, is refused here, whoever writes it (SQL, the command line, the console). The dialect
-- is croniter's common part (tests/integration/test_schedules.py checks every verdict against
-- croniter): five fields (minute hour day-of-month month day-of-week) and an optional sixth,
-- the second; *, ?, numbers, names (jan-dec, sun-sat), ranges a-b, steps */n a/n a-b/n,
-- lists; and @hourly @daily @midnight @weekly @monthly @yearly @annually. Not L, W, # or H.
-- As in croniter, a day-of-month and a day-of-week both restricted fire on either.

CREATE FUNCTION qlarius_cron_field(field text, low int, high int, names text[], what text)
RETURNS int[] LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    item text;
    parts text[];
    first_value int;
    last_value int;
    step int;
    found int[] := '{}';
BEGIN
    FOREACH item IN ARRAY string_to_array(lower(field), ',') LOOP
        parts := regexp_match(item, '^(\*|\?|[a-z]{3}|[0-9]{1,2})(?:-([a-z]{3}|[0-9]{1,2}))?(?:/([0-9]{1,3}))?$');
        IF parts IS NULL THEN
            RAISE EXCEPTION '%', format('the %s field %L is not understood', what, field);
        END IF;
        IF parts[1] = '?' AND what NOT IN ('day-of-month', 'day-of-week') THEN
            RAISE EXCEPTION '? only stands in the day-of-month or day-of-week field';
        END IF;
        IF parts[1] IN ('*', '?') THEN
            IF parts[2] IS NOT NULL THEN
                RAISE EXCEPTION '%', format('the %s field %L is not understood', what, field);
            END IF;
            first_value := low;
            last_value := high;
        ELSE
            first_value := CASE WHEN parts[1] ~ '^[0-9]' THEN parts[1]::int
                                ELSE array_position(names, parts[1]) - 1 + low END;
            last_value := CASE WHEN parts[2] IS NULL AND parts[3] IS NULL THEN first_value
                               WHEN parts[2] IS NULL THEN high
                               WHEN parts[2] ~ '^[0-9]' THEN parts[2]::int
                               ELSE array_position(names, parts[2]) - 1 + low END;
            IF first_value IS NULL OR last_value IS NULL THEN
                RAISE EXCEPTION '%', format('the %s field %L names no %s', what, field, what);
            END IF;
        END IF;
        IF first_value < low OR last_value > high OR first_value > high OR last_value < low THEN
            RAISE EXCEPTION '%', format('the %s field %L is out of range (%s to %s)', what, field, low, high);
        END IF;
        IF first_value > last_value THEN
            RAISE EXCEPTION '%', format('the %s field %L: a range must go upward', what, field);
        END IF;
        step := COALESCE(parts[3]::int, 1);
        IF step < 1 THEN
            RAISE EXCEPTION '%', format('the %s field %L: a step must be 1 or more', what, field);
        END IF;
        found := found || ARRAY(SELECT generate_series(first_value, last_value, step));
    END LOOP;
    RETURN found;
END;
$$;

-- NULL for an expression workers can run; else why not, in one line.
CREATE FUNCTION qlarius_cron_problem(cron text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    expression text := lower(btrim(COALESCE(cron, '')));
    fields text[];
    days int[];
    months int[];
BEGIN
    expression := CASE expression
        WHEN '@yearly' THEN '0 0 1 1 *' WHEN '@annually' THEN '0 0 1 1 *'
        WHEN '@monthly' THEN '0 0 1 * *' WHEN '@weekly' THEN '0 0 * * 0'
        WHEN '@daily' THEN '0 0 * * *' WHEN '@midnight' THEN '0 0 * * *'
        WHEN '@hourly' THEN '0 * * * *' ELSE expression END;
    IF expression = '' THEN
        RETURN 'a cron expression is needed';
    END IF;
    fields := regexp_split_to_array(expression, '\s+');
    IF array_length(fields, 1) NOT IN (5, 6) THEN
        RETURN format('%L is not a cron expression: it needs 5 fields (minute hour '
                      'day-of-month month day-of-week) or 6 (and the second)', cron);
    END IF;
    BEGIN
        PERFORM qlarius_cron_field(fields[1], 0, 59, NULL, 'minute');
        PERFORM qlarius_cron_field(fields[2], 0, 23, NULL, 'hour');
        days := qlarius_cron_field(fields[3], 1, 31, NULL, 'day-of-month');
        months := qlarius_cron_field(fields[4], 1, 12,
            '{jan,feb,mar,apr,may,jun,jul,aug,sep,oct,nov,dec}', 'month');
        PERFORM qlarius_cron_field(fields[5], 0, 7, '{sun,mon,tue,wed,thu,fri,sat}',
                                   'day-of-week');
        IF array_length(fields, 1) = 6 THEN
            PERFORM qlarius_cron_field(fields[6], 0, 59, NULL, 'second');
        END IF;
    EXCEPTION WHEN raise_exception THEN
        RETURN format('%L is not a cron expression: %s', cron, SQLERRM);
    END;
    -- Only a day-of-month restricted alone can miss every month (February 30th, April 31st).
    IF fields[3] NOT IN ('*', '?') AND fields[5] IN ('*', '?') AND NOT EXISTS (
        SELECT 1 FROM unnest(days) AS d, unnest(months) AS m
        WHERE d <= CASE WHEN m = 2 THEN 29 WHEN m IN (4, 6, 9, 11) THEN 30 ELSE 31 END
    ) THEN
        RETURN format('%L never fires: no month has that day', cron);
    END IF;
    RETURN NULL;
END;
$$;

-- Who changed a control: the doors name themselves for their transaction (SET LOCAL
-- qlarius.actor, e.g. 'cli:ops@host' or 'console:admin'); plain SQL is its database user.
CREATE FUNCTION qlarius_actor(fallback text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT COALESCE(NULLIF(current_setting('qlarius.actor', true), ''), fallback)
$$;

-- 2. The schedules.
CREATE TABLE qlarius_schedules (
    task_name text PRIMARY KEY,
    cron text NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    -- The latest tick deferred: ticks up to it are done. Set to now() when the schedule is
    -- created, its cron changed or it is enabled again, so that ticks of before never fire.
    last_tick_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL DEFAULT current_user
);

-- An expression as stored: lower case, single spaces, no space around (what croniter runs).
CREATE FUNCTION qlarius_cron_normalized(cron text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT regexp_replace(lower(btrim(cron)), '\s+', ' ', 'g')
$$;

CREATE FUNCTION qlarius_schedule_checked() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    problem text := qlarius_cron_problem(NEW.cron);
BEGIN
    NEW.cron := qlarius_cron_normalized(NEW.cron);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'invalid schedule for %: %', NEW.task_name, problem
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'INSERT' THEN
        NEW.last_tick_at := COALESCE(NEW.last_tick_at, now());
    ELSIF NEW.cron IS DISTINCT FROM OLD.cron OR (NEW.enabled AND NOT OLD.enabled) THEN
        NEW.last_tick_at := now();
    END IF;
    IF TG_OP = 'INSERT' OR (NEW.cron, NEW.enabled) IS DISTINCT FROM (OLD.cron, OLD.enabled) THEN
        NEW.updated_at := now();
        NEW.updated_by := qlarius_actor(CASE TG_OP WHEN 'INSERT' THEN NEW.updated_by
                                                   ELSE current_user::text END);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER qlarius_schedule_checked
BEFORE INSERT OR UPDATE ON qlarius_schedules
FOR EACH ROW EXECUTE FUNCTION qlarius_schedule_checked();

CREATE TABLE qlarius_schedule_ticks (
    task_name text NOT NULL,
    tick_at timestamptz NOT NULL,
    run_now boolean NOT NULL DEFAULT false,  -- asked for by an operator, not by the cron
    missed integer NOT NULL DEFAULT 0,       -- earlier ticks this one caught up (not run)
    job_id bigint,  -- NULL: the previous tick's job was still waiting, so none was added
    deferred_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_name, tick_at)
);

-- 3. Queue and task controls.
CREATE TABLE qlarius_queue_controls (
    queue_name text PRIMARY KEY,
    paused boolean NOT NULL DEFAULT false,
    -- each worker process runs at most this many jobs of the queue at once (NULL: its own)
    concurrency integer CHECK (concurrency BETWEEN 1 AND 10000),
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL DEFAULT current_user
);

CREATE TABLE qlarius_task_controls (
    task_name text PRIMARY KEY,
    paused boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL DEFAULT current_user
);

CREATE FUNCTION qlarius_control_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF to_jsonb(NEW) - 'updated_at' - 'updated_by' IS DISTINCT FROM
       to_jsonb(OLD) - 'updated_at' - 'updated_by' THEN
        NEW.updated_at := now();
        NEW.updated_by := qlarius_actor(current_user::text);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER qlarius_queue_control_updated
BEFORE UPDATE ON qlarius_queue_controls
FOR EACH ROW EXECUTE FUNCTION qlarius_control_updated();

CREATE TRIGGER qlarius_task_control_updated
BEFORE UPDATE ON qlarius_task_controls
FOR EACH ROW EXECUTE FUNCTION qlarius_control_updated();

-- 4. Every worker hears of a change at commit (and polls, in case it does not). Not of a
-- tick claimed (last_tick_at): the claimers know, and the others read it at their next poll.
CREATE FUNCTION qlarius_controls_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('qlarius_wakeup', 'controls');  -- one per transaction, however many rows
    RETURN NULL;
END;
$$;

CREATE TRIGGER qlarius_schedules_changed
AFTER INSERT OR DELETE ON qlarius_schedules
FOR EACH ROW EXECUTE FUNCTION qlarius_controls_changed();
CREATE TRIGGER qlarius_schedules_updated
AFTER UPDATE ON qlarius_schedules
FOR EACH ROW WHEN ((OLD.cron, OLD.enabled) IS DISTINCT FROM (NEW.cron, NEW.enabled))
EXECUTE FUNCTION qlarius_controls_changed();
CREATE TRIGGER qlarius_queue_controls_changed
AFTER INSERT OR UPDATE OR DELETE ON qlarius_queue_controls
FOR EACH STATEMENT EXECUTE FUNCTION qlarius_controls_changed();
CREATE TRIGGER qlarius_task_controls_changed
AFTER INSERT OR UPDATE OR DELETE ON qlarius_task_controls
FOR EACH STATEMENT EXECUTE FUNCTION qlarius_controls_changed();

-- 5. The fetch of our workers: Procrastinate's procrastinate_fetch_job_v2 (3.x), the same
-- statement, except that jobs of a paused queue or task are left waiting.
-- tests/unit/test_procrastinate_adapter.py fails when Procrastinate's own changes.
CREATE FUNCTION qlarius_fetch_job(target_queue_names character varying[], p_worker_id bigint)
RETURNS procrastinate_jobs LANGUAGE plpgsql AS $$
DECLARE
    found_jobs procrastinate_jobs;
    paused_queues text[] := ARRAY(SELECT queue_name FROM qlarius_queue_controls WHERE paused);
    paused_tasks text[] := ARRAY(SELECT task_name FROM qlarius_task_controls WHERE paused);
BEGIN
    IF target_queue_names IS NOT NULL AND target_queue_names::text[] <@ paused_queues THEN
        RETURN NULL;  -- every queue asked for is paused: not even a look at the jobs
    END IF;
    WITH candidate AS (
        SELECT jobs.*
            FROM procrastinate_jobs AS jobs
            WHERE
                NOT EXISTS (
                    SELECT 1
                        FROM procrastinate_jobs AS other_jobs
                        WHERE
                            jobs.lock IS NOT NULL
                            AND other_jobs.lock = jobs.lock
                            AND (
                                other_jobs.status = 'doing'
                                OR
                                (
                                    other_jobs.status = 'todo'
                                    AND (
                                        other_jobs.priority > jobs.priority
                                        OR (
                                        other_jobs.priority = jobs.priority
                                        AND other_jobs.id < jobs.id
                                        )
                                    )
                                )
                            )
                )
                AND jobs.status = 'todo'
                AND (target_queue_names IS NULL OR jobs.queue_name = ANY( target_queue_names ))
                AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
                AND jobs.queue_name <> ALL (paused_queues)
                AND jobs.task_name <> ALL (paused_tasks)
            ORDER BY jobs.priority DESC, jobs.id ASC LIMIT 1
            FOR UPDATE OF jobs SKIP LOCKED
    )
    UPDATE procrastinate_jobs
        SET status = 'doing', worker_id = p_worker_id
        FROM candidate
        WHERE procrastinate_jobs.id = candidate.id
        RETURNING procrastinate_jobs.* INTO found_jobs;

    RETURN found_jobs;
END;
$$;

-- 6. A tick's job, exactly once: the schedule's row is the guard (last_tick_at only moves
-- forward, under the row's lock, and only for the cron the caller computed the tick from),
-- and the ledger's key (task, tick) the proof. A tick missed while no worker ran is caught up
-- by one job, for the latest tick only (the caller says how many it stands for). Run now
-- (p_run_now) goes through the same ledger, at the current time, without moving the
-- schedule. One call, set-based, for every due schedule at once.
CREATE FUNCTION qlarius_defer_ticks(p_tasks text[], p_crons text[], p_ticks timestamptz[],
                                    p_queues text[], p_missed integer[], p_run_now boolean)
RETURNS TABLE (task_name text, tick_at timestamptz, job_id bigint, missed integer)
LANGUAGE plpgsql AS $$
DECLARE
    deferred jsonb;
BEGIN
    -- The schedules' rows first, in order: claims and runs now of one schedule take turns,
    -- and the next statement (a new snapshot) sees the job the one before added.
    PERFORM 1 FROM qlarius_schedules s WHERE s.task_name = ANY(p_tasks)
    ORDER BY s.task_name FOR NO KEY UPDATE;

    WITH due AS (
        SELECT * FROM unnest(p_tasks, p_crons, p_ticks, p_queues, p_missed)
            AS d(task_name, cron, tick_at, queue_name, missed)
    ), claimed AS (
        UPDATE qlarius_schedules s SET last_tick_at = d.tick_at
        FROM due d
        WHERE NOT p_run_now AND s.task_name = d.task_name AND s.cron = d.cron AND s.enabled
          AND s.last_tick_at < d.tick_at AND d.tick_at <= now()
        RETURNING d.task_name, d.tick_at, d.queue_name, d.missed
    ), chosen AS (
        SELECT * FROM claimed
        UNION ALL
        SELECT d.task_name, d.tick_at, d.queue_name, 0
        FROM due d JOIN qlarius_schedules s ON s.task_name = d.task_name
        WHERE p_run_now
    ), ledger AS (
        INSERT INTO qlarius_schedule_ticks AS t (task_name, tick_at, run_now, missed)
        SELECT c.task_name, c.tick_at, p_run_now, c.missed FROM chosen c
        ON CONFLICT DO NOTHING
        RETURNING t.task_name, t.tick_at, t.missed
    ), jobs AS (
        -- No job while one of the task still waits (a paused queue, a busy worker): that one
        -- will do the work, and a paused queue does not pile up a job per tick.
        INSERT INTO procrastinate_jobs AS j (queue_name, task_name, args)
        SELECT c.queue_name, l.task_name,
               jsonb_build_object('timestamp', extract(epoch FROM l.tick_at)::bigint)
        FROM ledger l JOIN chosen c ON c.task_name = l.task_name
        WHERE NOT EXISTS (
            SELECT 1 FROM procrastinate_jobs w
            WHERE w.task_name = l.task_name AND w.queue_name = c.queue_name
              AND w.status = 'todo')
        ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING
        RETURNING j.id, j.task_name
    )
    SELECT COALESCE(jsonb_agg(jsonb_build_object(
               'task_name', l.task_name, 'tick_at', l.tick_at, 'job_id', j.id,
               'missed', l.missed)), '[]')
    INTO deferred
    FROM ledger l LEFT JOIN jobs j ON j.task_name = l.task_name;

    RETURN QUERY
    UPDATE qlarius_schedule_ticks t SET job_id = r.job_id
    FROM jsonb_to_recordset(deferred) AS r(task_name text, tick_at timestamptz, job_id bigint,
                                           missed integer)
    WHERE t.task_name = r.task_name AND t.tick_at = r.tick_at
    RETURNING t.task_name, t.tick_at, t.job_id, t.missed;
END;
$$;

-- 7. Whether a waiting job waits for a resume: its queue or task is paused, or a job before
-- it in its lock is (the fetch takes a lock's jobs in order). Runs that end when nothing is
-- due (worker --until-empty, testing.drain) leave such jobs waiting instead of looping.
CREATE FUNCTION qlarius_waits_for_a_resume(p_id bigint, p_queue text, p_task text, p_lock text,
                                           p_priority integer)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT p_queue IN (SELECT queue_name FROM qlarius_queue_controls WHERE paused)
        OR p_task IN (SELECT task_name FROM qlarius_task_controls WHERE paused)
        OR (p_lock IS NOT NULL AND EXISTS (
            SELECT 1 FROM procrastinate_jobs o
            WHERE o.lock = p_lock AND o.status = 'todo' AND o.id <> p_id
              AND (o.priority > p_priority OR (o.priority = p_priority AND o.id < p_id))
              AND (o.queue_name IN (SELECT queue_name FROM qlarius_queue_controls WHERE paused)
                   OR o.task_name IN (SELECT task_name FROM qlarius_task_controls
                                      WHERE paused))))
$$;
