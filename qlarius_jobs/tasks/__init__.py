"""The job families; importing this package registers every task on ``qlarius_jobs.app.app``."""

from qlarius_jobs.tasks import backfill, maintenance, offers, populations

__all__ = ["backfill", "maintenance", "offers", "populations"]
