-- Error history, as Oban's `errors`: one row per failed attempt, kept with its job (deleted
-- with it when finished jobs are pruned).
CREATE TABLE qlarius_job_errors (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id bigint NOT NULL REFERENCES procrastinate_jobs (id) ON DELETE CASCADE,
    task_name text NOT NULL,
    attempt int NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    error_type text NOT NULL,
    message text NOT NULL,
    traceback text
);
CREATE INDEX qlarius_job_errors_job_idx ON qlarius_job_errors (job_id, attempt);
CREATE INDEX qlarius_job_errors_at_idx ON qlarius_job_errors (at DESC);
