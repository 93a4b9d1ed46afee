"""Our job managers keep Procrastinate's ``JobManager`` contract, as its documentation and its
own manager tests state it (``tests/unit/test_manager.py`` upstream): a refused deferral is an
``AlreadyEnqueued`` chained to the ``UniqueViolation``; a job that cannot be finished raises;
database errors come wrapped in ``ConnectorException``. Each point against the real
database, side by side with Procrastinate's own manager where it applies."""

from __future__ import annotations

import pytest
from procrastinate import exceptions, jobs, manager

from qlarius_jobs.worker.managers import CheckedJobManager
from qlarius_jobs.worker.procrastinate_adapter import QUEUEING_LOCK_INDEX
from qlarius_jobs.worker.resilience import Availability, JobNotRunningHere, ResilientJobManager


def _resilient(app) -> ResilientJobManager:
    base = app.job_manager
    assert isinstance(base, CheckedJobManager)
    return ResilientJobManager(base, Availability(30))


async def _fetched(app, worker_manager, queue: str = "maintenance") -> tuple[jobs.Job, int]:
    worker_id = await worker_manager.register_worker()
    job = await worker_manager.fetch_job(queues=[queue], worker_id=worker_id)
    assert job is not None and job.worker_id == worker_id
    return job, worker_id


async def test_a_refused_deferral_is_chained_to_the_unique_violation(app):
    task = app.configure_task("backfill_missing_snapshots")
    first = await task.defer_async()
    with pytest.raises(exceptions.AlreadyEnqueued) as refused:
        await task.defer_async()
    cause = refused.value.__cause__
    assert isinstance(cause, exceptions.UniqueViolation)
    assert cause.constraint_name == QUEUEING_LOCK_INDEX
    assert cause.queueing_lock == "backfill_missing_snapshots"
    assert str(refused.value) == f"backfill_missing_snapshots: already enqueued as job #{first}"


def test_a_refused_sync_deferral_is_chained_too(sync_conn):
    from qlarius_jobs.app import build_app

    app = build_app()
    with app.open():
        task = app.configure_task("backfill_missing_snapshots")
        task.defer()
        with pytest.raises(exceptions.AlreadyEnqueued) as refused:
            task.defer()
    assert isinstance(refused.value.__cause__, exceptions.UniqueViolation)
    assert refused.value.__cause__.queueing_lock == "backfill_missing_snapshots"


async def test_finishing_a_job_sets_its_final_state_once(app, sync_conn):
    worker_manager = _resilient(app)
    await app.configure_task("prune_finished_jobs").defer_async()
    job, _ = await _fetched(app, worker_manager)
    await worker_manager.finish_job(job, jobs.Status.SUCCEEDED, delete_job=False)
    assert sync_conn.execute(
        "SELECT status::text, attempts FROM procrastinate_jobs WHERE id = %s", (job.id,)
    ).fetchone() == ("succeeded", 1)
    # finished already: Procrastinate's own manager raises here, and so does ours
    with pytest.raises(exceptions.ConnectorException):
        await manager.JobManager(app.connector).finish_job(job, jobs.Status.FAILED, False)
    with pytest.raises(exceptions.ConnectorException):
        await worker_manager.finish_job(job, jobs.Status.FAILED, delete_job=False)
    assert sync_conn.execute(
        "SELECT status::text FROM procrastinate_jobs WHERE id = %s", (job.id,)
    ).fetchone() == ("succeeded",)


async def test_finishing_a_job_another_worker_runs_raises_and_writes_nothing(app, sync_conn):
    """The job was rescued and taken by another worker while this one lost the database:
    this worker's late result raises (a ConnectorException, as Procrastinate's would for a
    job it cannot finish) and is not written over the other run."""
    worker_manager = _resilient(app)
    await app.configure_task("prune_finished_jobs").defer_async()
    job, _ = await _fetched(app, worker_manager)
    other = await worker_manager.register_worker()
    sync_conn.execute("UPDATE procrastinate_jobs SET worker_id = %s WHERE id = %s", (other, job.id))
    with pytest.raises(JobNotRunningHere) as raised:
        await worker_manager.finish_job(job, jobs.Status.SUCCEEDED, delete_job=False)
    assert isinstance(raised.value, exceptions.ConnectorException)
    with pytest.raises(JobNotRunningHere):
        await worker_manager.retry_job(job)
    assert sync_conn.execute(
        "SELECT status::text, worker_id FROM procrastinate_jobs WHERE id = %s", (job.id,)
    ).fetchone() == ("doing", other)


async def test_finishing_with_deletion_deletes_the_job(app, sync_conn):
    worker_manager = _resilient(app)
    await app.configure_task("prune_finished_jobs").defer_async()
    job, _ = await _fetched(app, worker_manager)
    await worker_manager.finish_job(job, jobs.Status.SUCCEEDED, delete_job=True)
    assert sync_conn.execute(
        "SELECT count(*) FROM procrastinate_jobs WHERE id = %s", (job.id,)
    ).fetchone() == (0,)


async def test_retrying_a_job_puts_it_back_with_one_more_attempt(app, sync_conn):
    from procrastinate import utils

    worker_manager = _resilient(app)
    await app.configure_task("prune_finished_jobs").defer_async()
    job, _ = await _fetched(app, worker_manager)
    retry_at = utils.utcnow()
    await worker_manager.retry_job(job, retry_at=retry_at, priority=5, queue=None, lock=None)
    status, attempts, scheduled_at, priority = sync_conn.execute(
        "SELECT status::text, attempts, scheduled_at, priority FROM procrastinate_jobs "
        "WHERE id = %s",
        (job.id,),
    ).fetchone()
    assert (status, attempts, priority) == ("todo", 1, 5)
    assert abs((scheduled_at - retry_at).total_seconds()) < 0.01


async def test_database_errors_come_wrapped_in_a_connector_exception(app):
    """A finish to a status Procrastinate refuses: its SQL function raises; both managers
    give a ConnectorException whose cause is the database's error."""
    import psycopg

    worker_manager = _resilient(app)
    await app.configure_task("prune_finished_jobs").defer_async()
    job, _ = await _fetched(app, worker_manager)
    for jm in (manager.JobManager(app.connector), worker_manager):
        with pytest.raises(exceptions.ConnectorException) as raised:
            await jm.finish_job(job, jobs.Status.TODO, delete_job=False)
        assert isinstance(raised.value.__cause__, psycopg.Error)
        assert "End status should be" in str(raised.value.__cause__)
