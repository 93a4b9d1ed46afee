"""The job definitions: their arguments, what a run and a job spec share, and the jobs."""
