"""A plain Procrastinate application sharing the database: its jobs behave exactly as
Procrastinate alone makes them behave. The same scenario runs twice, against a database
holding only Procrastinate's schema (the reference) and against ours with our workers and
maintenance jobs running beside it; what the application sees, and its rows, must be equal."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from typing import Any

import procrastinate
import psycopg
import pytest
from procrastinate import exceptions

from qlarius_jobs import testing
from qlarius_jobs.jobs import catalog
from qlarius_jobs.worker import runner
from tests.integration.support import TEST_DB, unmigrated_database

QUEUE = "their_queue"


def their_app(conninfo: str) -> procrastinate.App:
    """The other application: its own tasks, one of them named like one of ours."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

    @app.task(name="send_email", queue=QUEUE, queueing_lock="mail")
    async def send_email(**kwargs: Any) -> None:
        return None

    @app.task(
        name="flaky",
        queue=QUEUE,
        retry=procrastinate.RetryStrategy(max_attempts=3, wait=3600),
    )
    async def flaky(**kwargs: Any) -> None:
        raise RuntimeError("their job fails once")

    @app.task(name="populate_target", queue=QUEUE)  # our task's name, their queue
    async def populate_target(**kwargs: Any) -> None:
        return None

    return app


async def _defer(app: procrastinate.App, task: str, **options: Any) -> str:
    kwargs = options.pop("kwargs", {})
    try:
        await app.configure_task(task, **options).defer_async(**kwargs)
    except exceptions.AlreadyEnqueued as exc:
        cause = exc.__cause__
        return f"refused: {type(cause).__name__} {getattr(cause, 'queueing_lock', None)}"
    return "deferred"


async def scenario(conninfo: str, beside: Any) -> dict[str, Any]:
    """What the other application does and sees; ``beside()`` runs our side's work at the
    points where it could interfere (nothing, in the reference database)."""
    app = their_app(conninfo)
    seen: dict[str, Any] = {}
    async with app.open_async():
        seen["first mail"] = await _defer(app, "send_email", queueing_lock="mail:1")
        seen["second mail"] = await _defer(app, "send_email", queueing_lock="mail:1")
        # a job with a queueing lock fails and waits for its retry (in an hour)
        seen["flaky"] = await _defer(app, "flaky", queueing_lock="flaky:1")
        await app.run_worker_async(queues=[QUEUE], wait=False, install_signal_handlers=False)
        await beside()
        # the retry keeps its queueing lock: a second deferral is refused, as Procrastinate does
        seen["flaky again while its retry waits"] = await _defer(
            app, "flaky", queueing_lock="flaky:1"
        )
        seen["their populate_target"] = await _defer(
            app, "populate_target", kwargs={"target_id": 1}
        )
        async with app.connector.pool.connection() as conn:
            # a row written by hand with arguments that are not an object: theirs to allow
            await conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
                "VALUES (%s, 'send_email', '[1, 2]')",
                (QUEUE,),
            )
            # one of their jobs left running by a worker that died long ago
            await conn.execute(
                "INSERT INTO procrastinate_workers (last_heartbeat) "
                "VALUES (now() - interval '1 day')"
            )
            await conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, worker_id) "
                "SELECT %s, 'send_email', '{}', 'doing', max(id) FROM procrastinate_workers",
                (QUEUE,),
            )
            # and a job of theirs that finished long ago
            await conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
                "VALUES (%s, 'send_email', '{\"old\": true}', 'succeeded')",
                (QUEUE,),
            )
            await conn.execute(
                "INSERT INTO procrastinate_events (job_id, type, at) "
                "SELECT max(id), 'succeeded', now() - interval '30 days' FROM procrastinate_jobs"
            )
        await beside()
        # an operator retries a failed job of theirs by id: it keeps its queueing lock
        async with app.connector.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE procrastinate_jobs SET status = 'failed' "
                "WHERE task_name = 'flaky' AND status = 'todo' RETURNING id"
            )
            (failed_id,) = await cur.fetchone()
        await app.job_manager.retry_job_by_id_async(
            failed_id, retry_at=procrastinate.utils.utcnow() + datetime.timedelta(hours=1)
        )
        seen["flaky after its retry by id"] = await _defer(app, "flaky", queueing_lock="flaky:1")
        await beside()
        async with app.connector.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT task_name, status::text, attempts, lock, queueing_lock, args, "
                "worker_id IS NOT NULL AS has_worker "
                "FROM procrastinate_jobs WHERE queue_name = %s ORDER BY id",
                (QUEUE,),
            )
            seen["their jobs"] = await cur.fetchall()
            cur = await conn.execute(
                "SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat < now() - "
                "interval '1 hour'"
            )
            seen["their dead worker rows"] = (await cur.fetchone())[0]
    return seen


async def test_a_plain_procrastinate_app_beside_ours_behaves_as_procrastinate_alone(app):
    with unmigrated_database() as alone:
        reference_app = their_app(alone)
        async with reference_app.open_async():
            await reference_app.schema_manager.apply_schema_async()

        async def nothing() -> None:
            return None

        expected = await scenario(alone, nothing)

    chosen = {q: 2 for q in runner.queues_to_run(runner.job_specs(app))}
    ours = asyncio.create_task(
        runner.run_workers(
            app,
            chosen,
            install_signal_handlers=False,
            fetch_job_polling_interval=0.05,
            periodic=False,
        )
    )

    async def our_maintenance() -> None:
        # what our workers do on their own, now: rescue stalled jobs, prune old ones
        await testing.perform_job(app, "rescue_stalled_jobs")
        await testing.perform_job(app, "prune_finished_jobs")

    try:
        seen = await scenario(TEST_DB.conninfo, our_maintenance)
    finally:
        ours.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ours
    assert expected["second mail"].startswith("refused: UniqueViolation mail:1")
    assert expected["flaky again while its retry waits"].startswith("refused")
    assert expected["flaky after its retry by id"].startswith("refused")
    assert seen == expected


async def test_our_jobs_are_known_by_task_and_queue_in_the_database(sync_conn):
    """``qlarius_owns_job`` (the triggers' and constraints' test) is exactly the catalog."""
    specs = catalog.specs()
    pairs = [(name, spec.queue) for name, spec in specs.items()]
    queues = sorted({spec.queue for spec in specs.values()} | {QUEUE})
    for name in [*specs, "send_email"]:
        for queue in queues:
            owned = sync_conn.execute("SELECT qlarius_owns_job(%s, %s)", (name, queue)).fetchone()[
                0
            ]
            assert owned == ((name, queue) in pairs), (name, queue)


@pytest.mark.parametrize("value", ["9999999999999999999", "9223372036854775808", "1e400"])
def test_an_id_past_bigint_is_no_id_and_never_an_error(sync_conn, value):
    assert (
        sync_conn.execute(
            "SELECT qlarius_job_arg_id(%s::jsonb, 'target_id')", (f'{{"target_id": {value}}}',)
        ).fetchone()[0]
        is None
    )
    assert (
        sync_conn.execute(
            "SELECT qlarius_job_arg_id('{\"target_id\": 9223372036854775807}', 'target_id')"
        ).fetchone()[0]
        == 2**63 - 1
    )


async def test_our_task_deferred_by_hand_to_another_queue_is_not_run_as_ours(app, sync_conn):
    """Not ours to the database (no lock derived), so our worker refuses it, not retried."""
    with psycopg.connect(TEST_DB.conninfo, autocommit=True) as conn:
        conn.execute("INSERT INTO targets (id, title) VALUES (1, 't')")
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "VALUES ('default', 'populate_target', '{\"target_id\": 1}')"
        )
    outcomes = await testing.drain(app, ["default"])
    assert outcomes.get("failed") == 1
    [(lock, status, message)] = sync_conn.execute(
        "SELECT j.lock, j.status::text, e.message FROM procrastinate_jobs j "
        "JOIN qlarius_job_errors e ON e.job_id = j.id"
    ).fetchall()
    assert lock is None and status == "failed"
    assert message == "populate_target runs on queue targets, not 'default'"
