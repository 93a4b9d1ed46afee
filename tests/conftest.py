"""Tests run against a real PostgreSQL: the embedded cluster (database ``qlarius_jobs_test``)
or ``QLARIUS_TEST_DATABASE_URL``. Never the application database: every test starts by
emptying the tables."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg import conninfo as pg_conninfo

from qlarius_jobs import database, migrations
from qlarius_jobs.settings import Settings, get_settings


def _test_conninfo() -> str:
    explicit = os.environ.get("QLARIUS_TEST_DATABASE_URL")
    if explicit:
        return explicit
    base = Settings()
    admin = database.ensure_database(base)
    params = pg_conninfo.conninfo_to_dict(admin)
    test_db = f"{params.get('dbname', 'qlarius_jobs')}_test"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (test_db,)).fetchone():
            conn.execute(
                psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(test_db))
            )
    return pg_conninfo.make_conninfo(admin, dbname=test_db)


TEST_CONNINFO = _test_conninfo()
# Everything below, and every subprocess a test starts, talks to the test database.
os.environ["QLARIUS_DATABASE_URL"] = TEST_CONNINFO
os.environ.setdefault("QLARIUS_LOG_FORMAT", "json")
get_settings.cache_clear()
migrations.migrate(TEST_CONNINFO)

_KEEP = ("qlarius_schema_migrations", "qlarius_procrastinate_schema")


def _clean(conn: psycopg.Connection) -> None:
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> ALL(%s)",
            (list(_KEEP),),
        )
    ]
    conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")


@pytest.fixture(autouse=True)
def clean_database() -> Iterator[None]:
    with psycopg.connect(TEST_CONNINFO, autocommit=True) as conn:
        _clean(conn)
    yield


@pytest.fixture
def conninfo() -> str:
    return TEST_CONNINFO


@pytest.fixture
async def conn() -> AsyncIterator[psycopg.AsyncConnection]:
    """An autocommit connection: each statement commits, as a job's helper would see it."""
    async with await psycopg.AsyncConnection.connect(TEST_CONNINFO, autocommit=True) as c:
        yield c


@pytest.fixture
def sync_conn() -> Iterator[psycopg.Connection]:
    with psycopg.connect(TEST_CONNINFO, autocommit=True) as c:
        yield c


# --- jobs ---------------------------------------------------------------------------------

os.environ.setdefault("QLARIUS_RETRY_BACKOFF_SECONDS", "0")  # retries run at once in tests
get_settings.cache_clear()


@pytest.fixture
async def app():
    """The real Procrastinate app, open on the test database."""
    from qlarius_jobs.app import app as qlarius_app

    async with qlarius_app.open_async():
        yield qlarius_app


class SettingsOverride:
    """Change fields of the live settings for one test (undone afterwards)."""

    def __init__(self, monkeypatch):
        self.live = get_settings()
        self._monkeypatch = monkeypatch

    def set(self, **changes):
        for key, value in changes.items():
            self._monkeypatch.setattr(self.live, key, value)


@pytest.fixture
def settings(monkeypatch) -> SettingsOverride:
    return SettingsOverride(monkeypatch)


async def drain(rounds: int = 20) -> None:
    """Run a real in-process worker on every queue until no job is due any more.

    Without the periodic schedule: a tick (the hourly backfill, deferred up to 10 minutes
    late by a starting worker) would add jobs that the tests did not ask for.
    """
    from qlarius_jobs import runner

    for _ in range(rounds):
        await runner.run_workers(
            runner.configured_queues(),
            wait=False,
            install_signal_handlers=False,
            fetch_job_polling_interval=0.05,
            periodic=False,
        )
        with psycopg.connect(TEST_CONNINFO) as conn:
            due = conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing') "
                "AND (scheduled_at IS NULL OR scheduled_at <= now())"
            ).fetchone()[0]
        if not due:
            return
    raise AssertionError("jobs still due after draining")


def log_events(caplog) -> list[dict]:
    """structlog events that went through stdlib logging, as dicts."""
    return [r.msg for r in caplog.records if isinstance(r.msg, dict)]


def jobs(conn: psycopg.Connection, task_name: str | None = None) -> list[dict]:
    rows = conn.execute(
        "SELECT id, task_name, status::text, attempts, args, lock, queueing_lock, scheduled_at "
        "FROM procrastinate_jobs WHERE %s::text IS NULL OR task_name = %s ORDER BY id",
        (task_name, task_name),
    ).fetchall()
    keys = [
        "id",
        "task_name",
        "status",
        "attempts",
        "args",
        "lock",
        "queueing_lock",
        "scheduled_at",
    ]
    return [dict(zip(keys, r, strict=True)) for r in rows]


def defer_with_cli(task: str, args: dict, env: dict | None = None) -> None:
    """Defer a job the way an operator would: `procrastinate defer` in a subprocess."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    subprocess.run(
        [
            str(Path(sys.executable).parent / "procrastinate"),
            "--app=qlarius_jobs.app.app",
            "defer",
            task,
            json.dumps(args),
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )


class TargetRowHolder:
    """Holds a target's row lock from another connection, so a populate blocks while running."""

    def __init__(self, sync_conn: psycopg.Connection, target_id: int = 1) -> None:
        sync_conn.execute(
            "INSERT INTO targets (id, title) VALUES (%s, 't') ON CONFLICT DO NOTHING", (target_id,)
        )
        self._conn = psycopg.connect(TEST_CONNINFO)
        self._conn.execute("SELECT 1 FROM targets WHERE id = %s FOR UPDATE", (target_id,))

    def release(self) -> None:
        if not self._conn.closed:
            self._conn.rollback()
            self._conn.close()

    def __enter__(self) -> TargetRowHolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
