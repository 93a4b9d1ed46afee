-- What a job did, as its counts: what a drain applied, what a populate inserted. Procrastinate
-- keeps no return value, and JobSpec.run only logged its summary; it is now also written here,
-- one row per job that succeeded, so that the console can show it next to the job.
--
-- Keyed by the job, and deleted with it (ON DELETE CASCADE: prune_finished_jobs removes it with
-- its job, as the error history of 0004). Only the summary's numbers are kept, never the
-- arguments or anything else a job returned.
CREATE TABLE qlarius_job_results (
    job_id bigint PRIMARY KEY REFERENCES procrastinate_jobs (id) ON DELETE CASCADE,
    counts jsonb NOT NULL CHECK (jsonb_typeof(counts) = 'object'),
    recorded_at timestamptz NOT NULL DEFAULT now()
);
