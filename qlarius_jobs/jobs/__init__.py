"""The job runtime: what every job shares (base), the jobs, and the worker processes."""
