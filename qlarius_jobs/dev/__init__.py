"""Developer tooling: the embedded PostgreSQL, the data generator, the independent reference
of the domain rules, the storm, the fault scenarios, a real PgBouncer, worker processes."""
