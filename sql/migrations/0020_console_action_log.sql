-- What operators did from the console, newest last: who (console:<user>), when, which action
-- on what (jobs or targets by id, schedules, queues or tasks by name) and how many it touched.
-- Written in the transaction of the action itself, so a refused or failed action leaves no
-- row, and a row is never left without its action.
CREATE TABLE qlarius_console_actions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('job', 'target', 'schedule', 'queue', 'task')),
    action text NOT NULL,
    ids bigint[] NOT NULL DEFAULT '{}',    -- jobs or targets
    names text[] NOT NULL DEFAULT '{}',    -- schedules, queues or tasks
    count int NOT NULL CHECK (count >= 0),
    detail text                            -- a cron expression, a concurrency
);
-- a job's page lists the actions on it
CREATE INDEX qlarius_console_actions_ids_idx ON qlarius_console_actions USING gin (ids);
