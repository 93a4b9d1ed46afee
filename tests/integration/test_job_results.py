"""A job's summary counts (qlarius_job_results, migration 0019): written by our workers with
the job's success, in the guarded finish's one statement (no transaction of their own); by
one statement of JobSpec's under any other worker; never for a job no longer running for the
worker that ran it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from procrastinate import jobs

from qlarius_jobs.app import build_app
from qlarius_jobs.jobs.arguments import JobArgs
from qlarius_jobs.jobs.blueprint import JobBlueprint
from qlarius_jobs.jobs.run import JobRun
from qlarius_jobs.worker import runner
from qlarius_jobs.worker.managers import CheckedJobManager
from qlarius_jobs.worker.resilience import Availability, JobNotRunningHere, ResilientJobManager
from tests.integration.support import TEST_DB

blueprint = JobBlueprint()


class Args(JobArgs):
    n: int


@blueprint.job(name="count_things", queue="tests", args_model=Args)
async def count_things(run: JobRun, args: Args) -> dict[str, Any]:
    return {"things": args.n, "ratio": 0.5, "nothing": float("nan"), "flag": True, "note": "x"}


def _results(sync_conn) -> list[tuple[int, dict[str, Any], bool]]:
    """(job, counts, written by the success's own transaction) for every recorded job."""
    return sync_conn.execute(
        "SELECT r.job_id, r.counts, r.recorded_at = e.at FROM qlarius_job_results r "
        "JOIN procrastinate_events e ON e.job_id = r.job_id AND e.type = 'succeeded' "
        "ORDER BY r.job_id"
    ).fetchall()


async def test_our_workers_write_the_counts_with_the_success(sync_conn):
    app = build_app([blueprint], database=lambda: TEST_DB.conninfo)
    async with app.open_async():
        task = app.configure_task("count_things")
        first, second = await task.defer_async(n=3), await task.defer_async(n=4)
        await runner.run_workers(
            app, {"tests": 2}, wait=False, install_signal_handlers=False, periodic=False
        )
    # the same transaction as the success (now() of both is its start): one commit per job;
    # only the finite numbers (NaN is no JSON; a bool is no count)
    assert _results(sync_conn) == [
        (first, {"things": 3, "ratio": 0.5}, True),
        (second, {"things": 4, "ratio": 0.5}, True),
    ]


async def test_a_bare_procrastinate_worker_on_our_app_still_records_the_counts(sync_conn):
    app = build_app([blueprint], database=lambda: TEST_DB.conninfo)
    async with app.open_async():
        assert type(app.job_manager) is CheckedJobManager  # not ours: JobSpec writes them
        job = await app.configure_task("count_things").defer_async(n=7)
        await app.run_worker_async(queues=["tests"], wait=False, install_signal_handlers=False)
    [(job_id, counts, _)] = _results(sync_conn)
    assert (job_id, counts) == (job, {"things": 7, "ratio": 0.5})


@contextlib.asynccontextmanager
async def _a_running_job_with_counts() -> AsyncIterator[tuple[ResilientJobManager, int, jobs.Job]]:
    """Our job manager, a count_things job it fetched (running for its worker), and the
    counts its body kept for the finish: (manager, worker id, job)."""
    app = build_app([blueprint], database=lambda: TEST_DB.conninfo)
    async with app.open_async():
        base = app.job_manager
        assert isinstance(base, CheckedJobManager)
        manager = ResilientJobManager(base, Availability(30))
        await app.configure_task("count_things").defer_async(n=1)
        worker_id = await manager.register_worker()
        job = await manager.fetch_job(queues=["tests"], worker_id=worker_id)
        assert job is not None and job.id is not None
        manager.keep_result(job.id, {"things": 1})
        yield manager, worker_id, job


async def test_the_counts_of_a_rescued_job_are_not_written_by_its_late_finish(sync_conn):
    """The worker lost its job to a rescue (failed, no attempt left) while the body ran; the
    body's counts go with the refused finish, never onto the failed job."""
    async with _a_running_job_with_counts() as (manager, _, job):
        sync_conn.execute("SELECT procrastinate_finish_job_v1(%s, 'failed', false)", (job.id,))
        with pytest.raises(JobNotRunningHere):
            await manager.finish_job(job, jobs.Status.SUCCEEDED, delete_job=False)
        assert manager._results == {}  # nothing kept for a job that is gone
    assert sync_conn.execute("SELECT count(*) FROM qlarius_job_results").fetchone()[0] == 0


async def test_a_retried_attempt_leaves_no_counts_behind(sync_conn):
    async with _a_running_job_with_counts() as (manager, worker_id, job):
        await manager.retry_job(job)
        job = await manager.fetch_job(queues=["tests"], worker_id=worker_id)
        assert job is not None
        # the next attempt's success brings no counts of its own: none of the retried one's
        await manager.finish_job(job, jobs.Status.SUCCEEDED, delete_job=False)
    assert sync_conn.execute("SELECT count(*) FROM qlarius_job_results").fetchone()[0] == 0
