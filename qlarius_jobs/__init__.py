"""qlarius-jobs: the audience jobs of the Qlarius marketplace, on PostgreSQL and Procrastinate."""

__version__ = "0.1.0"
