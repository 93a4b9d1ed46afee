"""Helpers for the application's own tests, after Oban.Testing. They talk to the real
database (the test's), never to a mock::

    from qlarius_jobs import api, testing

    async def test_changing_tags_syncs_the_me_file(conn, app):
        await api.trigger_population(conn, target_id=7)
        await testing.assert_enqueued(conn, "populate_target", target_id=7)
        outcomes = await testing.drain(app, ["targets"])
        assert outcomes["failed"] == 0

``conn`` is an autocommit ``psycopg.AsyncConnection`` to the test database; ``app`` is an app
of ``qlarius_jobs.app.build_app()`` opened on it (``async with app.open_async(): ...``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from procrastinate import App, JobContext, jobs
from psycopg import AsyncConnection, Connection
from psycopg.types.json import Jsonb

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs import catalog
from qlarius_jobs.worker import runner
from qlarius_jobs.worker.procrastinate_adapter import pool as app_pool

SQL = QueryFile.of(__file__)


async def all_enqueued(
    conn: AsyncConnection, task: str | None = None, **args: Any
) -> list[dict[str, Any]]:
    """Waiting jobs (of ``task``) whose arguments include ``args``, oldest first."""
    if task is not None:
        catalog.spec(task)  # a mistyped task name is an error, not "nothing enqueued"
    return await SQL.many(conn, "enqueued_jobs", task=task, args=Jsonb(args))


async def assert_enqueued(conn: AsyncConnection, task: str, **args: Any) -> dict[str, Any]:
    """Fail unless a waiting ``task`` job has (at least) these arguments; return it."""
    found = await all_enqueued(conn, task, **args)
    if not found:
        waiting = [j["args"] for j in await all_enqueued(conn, task)]
        raise AssertionError(
            f"expected a waiting {task} job with {args}; waiting {task} jobs: {waiting or 'none'}"
        )
    return found[0]


async def refute_enqueued(conn: AsyncConnection, task: str, **args: Any) -> None:
    """Fail if a waiting ``task`` job has (at least) these arguments."""
    found = await all_enqueued(conn, task, **args)
    if found:
        raise AssertionError(
            f"expected no waiting {task} job with {args}; found job(s) "
            + ", ".join(f"#{j['id']} {j['args']}" for j in found)
        )


async def perform_job(app: App, task: str, **args: Any) -> dict[str, Any]:
    """Run ``task``'s body once, in this process, against the database ``app`` is open on,
    as a worker would (arguments checked, time limit, summary log); return its summary. No
    job row is written."""
    spec = catalog.spec(task)
    job = jobs.Job(
        id=None, queue=spec.queue, lock=None, queueing_lock=None, task_name=task, task_kwargs=args
    )
    context = JobContext(app=app, job=job, start_timestamp=time.time(), abort_reason=lambda: None)
    return await spec.run(context, **args)


def work_left(conn: Connection, queues: Iterable[str] | None = None, *, later: bool = False) -> int:
    """Jobs due or running in ``queues``, plus the pending work their jobs would take now:
    the one definition of "work left" (``drain``, the tests, the storm). ``later=True`` also
    counts what waits for later (retries scheduled later, pending rows set aside for a retry
    or left for a target a job holds): everything not yet done."""
    row = SQL.one_sync(conn, "work_left", queues=list(queues or catalog.queues()), later=later)
    return int(row["left"]) if row else 0


async def drain(
    app: App, queues: Iterable[str] | None = None, *, rounds: int = 20
) -> dict[str, int]:
    """Run ``app``'s workers in this process on ``queues`` (default: all of the app's) until
    no job is due there and no pending sync or reconcile is left for them; return how the
    jobs that ran ended (``succeeded``, ``failed``, ...). ``app`` must be open."""
    specs = runner.job_specs(app)
    chosen = list(queues or catalog.queues(specs))
    async with app_pool(app).connection() as conn:
        started = await SQL.one(conn, "now")
        assert started is not None
    concurrency = runner.queues_to_run(specs, ",".join(chosen))
    for _ in range(rounds):
        await runner.run_workers(
            app,
            concurrency,
            wait=False,
            install_signal_handlers=False,
            fetch_job_polling_interval=0.05,
            periodic=False,
        )
        async with app_pool(app).connection() as conn:
            left = await SQL.one(conn, "work_left", queues=chosen, later=False)
            if left is None or not left["left"]:
                rows = await SQL.many(conn, "outcomes_since", since=started["now"])
                outcomes = {"succeeded": 0, "failed": 0, "aborted": 0, "cancelled": 0}
                outcomes.update({r["type"]: int(r["jobs"]) for r in rows})
                return outcomes
    raise AssertionError(f"jobs still due in {chosen} after {rounds} rounds")
