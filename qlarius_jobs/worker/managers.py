"""The job manager of every app of ours: Procrastinate's, with this project's doors."""

from __future__ import annotations

from typing import Any

from procrastinate import exceptions, jobs, manager

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs.arguments import InvalidJobArguments, cut, parse_args, short_repr
from qlarius_jobs.jobs.blueprint import JobSpec
from qlarius_jobs.logs import get_logger
from qlarius_jobs.worker.procrastinate_adapter import pool as app_pool
from qlarius_jobs.worker.procrastinate_adapter import refusal_cause, refused_queueing_lock

log = get_logger(__name__)

SQL = QueryFile.of(__file__)


class CheckedJobManager(manager.JobManager):
    """Procrastinate's job manager with this project's doors: every deferral through
    Procrastinate (``procrastinate defer``, ``configure_task(...).defer_async``, batches) is
    checked against its job's model before anything is written, and a duplicate says which
    job it duplicates, in one line."""

    def __init__(self, connector: Any, specs: dict[str, JobSpec[Any]]) -> None:
        super().__init__(connector)
        self.specs = specs

    def check(self, batch: list[jobs.Job]) -> None:
        for job in batch:
            spec = self.specs.get(job.task_name)
            if spec is None:
                if job.task_name.startswith("procrastinate."):
                    continue  # Procrastinate's own builtin tasks
                raise InvalidJobArguments(f"no such task: {cut(job.task_name, 80)}")
            if job.queue != spec.queue:
                raise InvalidJobArguments(
                    f"{spec.name} runs on queue {spec.queue}, not {short_repr(job.queue)}"
                )
            if job.lock is not None or job.queueing_lock is not None:
                raise InvalidJobArguments(
                    f"{spec.name}: its locks are derived from its arguments; "
                    "--lock and --queueing-lock are not accepted"
                )
            parse_args(job.task_name, spec.args_model, job.task_kwargs)

    async def batch_defer_jobs_async(
        self, jobs: list[jobs.Job], connection: Any | None = None
    ) -> list[jobs.Job]:
        self.check(jobs)
        try:
            return await super().batch_defer_jobs_async(jobs, connection=connection)
        except exceptions.AlreadyEnqueued as exc:
            # Procrastinate's contract: chained to the UniqueViolation (constraint_name,
            # queueing_lock); the message says which job it duplicates.
            raise _duplicate_message(exc, await self._waiting_job(exc)) from refusal_cause(exc)

    def batch_defer_jobs(
        self, jobs: list[jobs.Job], connection: Any | None = None
    ) -> list[jobs.Job]:
        self.check(jobs)
        try:
            return super().batch_defer_jobs(jobs, connection=connection)
        except exceptions.AlreadyEnqueued as exc:
            raise _duplicate_message(exc, None) from refusal_cause(exc)

    async def _waiting_job(self, exc: exceptions.AlreadyEnqueued) -> int | None:
        """The job a refused deferral duplicates: best effort (the app may not be open, the
        caller's transaction may be aborted by the refusal); the refusal itself is what
        matters."""
        lock = refused_queueing_lock(exc)
        if lock is None:
            return None
        try:
            async with app_pool(self.connector).connection() as conn:
                row = await SQL.one(conn, "waiting_job_with_lock", lock=lock)
        except Exception as lookup_error:
            log.debug("duplicate's job not looked up", error=repr(lookup_error))
            return None
        return None if row is None else int(row["id"])


def _duplicate_message(
    exc: exceptions.AlreadyEnqueued, waiting: int | None
) -> exceptions.AlreadyEnqueued:
    lock = refused_queueing_lock(exc) or "?"
    task = lock.split(":", 1)[0]
    where = f"as job #{waiting}" if waiting is not None else f"(queueing lock {lock})"
    return exceptions.AlreadyEnqueued(f"{task}: already enqueued {where}")
