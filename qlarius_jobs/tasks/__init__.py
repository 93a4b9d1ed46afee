"""The job families; importing this package registers every task on ``qlarius_jobs.app.app``."""
