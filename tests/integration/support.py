"""What the integration tests share, apart from fixtures (``conftest.py``): the test database,
draining, reading jobs and logs, holding a target, the server's log. Importing it starts
nothing: the database is resolved on first use (the session's fixtures do that first).

The tests run against a real PostgreSQL: the embedded cluster or ``QLARIUS_TEST_DATABASE_URL``
(a server where the tests may create databases). Never the application database.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import sql
from psycopg.types.json import Jsonb

from qlarius_jobs.db import migrate
from qlarius_jobs.dev import seed
from qlarius_jobs.dev.processes import BIN, WorkerProcess
from qlarius_jobs.settings import Settings

if TYPE_CHECKING:
    from starlette.testclient import TestClient

__all__ = ["BIN", "TEST_DB", "WorkerProcess"]


class TestDatabase:
    """The tests' database, ``<db>_test`` on the tests' server; resolved on first use (the
    embedded cluster is started then, when no ``QLARIUS_TEST_DATABASE_URL`` is set)."""

    __test__ = False  # not a test class, whatever its name

    @functools.cached_property
    def server(self) -> str:
        explicit = os.environ.get("QLARIUS_TEST_DATABASE_URL")
        if explicit:
            return explicit
        from qlarius_jobs.dev import embedded

        return embedded.start(Settings(database_url=None))

    @property
    def name(self) -> str:
        return f"{pg_conninfo.conninfo_to_dict(self.server).get('dbname', 'qlarius_jobs')}_test"

    @property
    def conninfo(self) -> str:
        return pg_conninfo.make_conninfo(self.server, dbname=self.name)

    @property
    def server_log(self) -> str | None:
        """The server's log file: ``QLARIUS_TEST_SERVER_LOG``, else the embedded cluster's."""
        if os.environ.get("QLARIUS_TEST_SERVER_LOG"):
            return os.environ["QLARIUS_TEST_SERVER_LOG"]
        if os.environ.get("QLARIUS_TEST_DATABASE_URL"):
            return None
        from qlarius_jobs.dev import embedded

        return str(embedded.locate_cluster(Settings()).logfile)

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(
            pg_conninfo.make_conninfo(self.server, dbname="postgres"), autocommit=True
        )


TEST_DB = TestDatabase()


def create_database(name: str) -> None:
    """A new, empty database ``name`` on the tests' server (dropped first if it exists)."""
    seed.recreate_database(pg_conninfo.make_conninfo(TEST_DB.server, dbname=name))


def drop_database(name: str) -> None:
    with TEST_DB.admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


_KEEP = ("qlarius_schema_migrations", "qlarius_procrastinate_schema")


def reset(conn: psycopg.Connection) -> None:
    """The freshly migrated state: no session of an earlier test, no row, sequences at 1."""
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> ALL(%s)",
            (list(_KEEP),),
        )
    ]
    sequences = [
        r[0]
        for r in conn.execute(
            "SELECT quote_ident(sequencename) FROM pg_sequences WHERE schemaname = 'public'"
        )
    ]
    superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    conn.execute("SET lock_timeout = '30s'")  # a lock left behind fails the test, loudly
    if not superuser.fetchone()[0]:
        conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    else:
        _delete_every_row(conn, tables, sequences)
    with conn.transaction():
        migrate.install_defaults(conn)  # the schedules and queue controls migrate fills


def _delete_every_row(conn: psycopg.Connection, tables: list[str], sequences: list[str]) -> None:
    with conn.transaction():
        # DELETE leaves the tables' files in place (TRUNCATE makes and flushes new ones);
        # as replica, no trigger or foreign key fires: every row goes, in any order.
        conn.execute("SET LOCAL session_replication_role = replica")
        for table in tables:
            conn.execute(f"DELETE FROM {table}")
        for sequence in sequences:
            conn.execute(f"ALTER SEQUENCE {sequence} RESTART")


@contextlib.contextmanager
def unmigrated_database() -> Iterator[str]:
    """A database of its own that nothing migrated (dropped afterwards)."""
    name = f"{TEST_DB.name}_unmigrated"
    create_database(name)
    try:
        yield pg_conninfo.make_conninfo(TEST_DB.server, dbname=name)
    finally:
        drop_database(name)


@functools.cache
def project_app():
    """The project's app (every job), on the test database (``QLARIUS_DATABASE_URL``)."""
    from qlarius_jobs.app import build_app

    return build_app()


async def drain(rounds: int = 20, queues: set[str] | None = None) -> None:
    """``qlarius_jobs.testing.drain`` with the project's app: real in-process workers on every
    queue (or on ``queues``) until no job is due and no pending sync or reconcile is left.

    Without the periodic schedule: a tick (the hourly backfill, deferred up to 10 minutes
    late by a starting worker) would add jobs that the tests did not ask for.
    """
    from qlarius_jobs import testing
    from qlarius_jobs.worker.procrastinate_adapter import is_open

    app = project_app()
    async with contextlib.AsyncExitStack() as stack:
        if not is_open(app):
            await stack.enter_async_context(app.open_async())
        await testing.drain(app, sorted(queues) if queues else None, rounds=rounds)


def work_left(queues: set[str] | None = None) -> int:
    """``qlarius_jobs.testing.work_left`` on the test database."""
    from qlarius_jobs import testing

    with psycopg.connect(TEST_DB.conninfo) as conn:
        return testing.work_left(conn, sorted(queues) if queues else None)


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


def insert_job_by_hand(task_name: str, args: dict, queue: str = "targets") -> int:
    """A job row written straight into the table, past every door's argument check: what
    the worker's own validation is there for."""
    with psycopg.connect(TEST_DB.conninfo, autocommit=True) as conn:
        return conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) VALUES (%s, %s, %s) "
            "RETURNING id",
            (queue, task_name, Jsonb(args)),
        ).fetchone()[0]


def defer_with_cli(task: str, args: dict, env: dict | None = None) -> None:
    """Defer a job the way an operator would: `procrastinate defer` in a subprocess."""
    subprocess.run(
        [
            str(BIN / "procrastinate"),
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
    """Holds a target's populations scope from another connection, as a running populate
    would: the next populate of that target blocks (running) until released."""

    def __init__(self, sync_conn: psycopg.Connection, target_id: int = 1) -> None:
        sync_conn.execute(
            "INSERT INTO targets (id, title) VALUES (%s, 't') ON CONFLICT DO NOTHING", (target_id,)
        )
        self._conn = psycopg.connect(TEST_DB.conninfo)
        self._conn.execute(
            "SELECT 1 FROM qlarius_target_locks WHERE target_id = %s AND scope = 'populations' "
            "FOR UPDATE",
            (target_id,),
        )

    def release(self) -> None:
        if not self._conn.closed:
            self._conn.rollback()
            self._conn.close()

    def __enter__(self) -> TargetRowHolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def free_port() -> int:
    """A TCP port nobody listens on now, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerLog:
    """The PostgreSQL server's log from now on."""

    def __init__(self) -> None:
        if TEST_DB.server_log is None:
            raise RuntimeError(
                "set QLARIUS_TEST_SERVER_LOG to the server's log file to run this test "
                "against QLARIUS_TEST_DATABASE_URL"
            )
        self.path = Path(TEST_DB.server_log)
        self.start = self.path.stat().st_size

    def new_lines(self) -> list[str]:
        with self.path.open(errors="replace") as log:
            log.seek(self.start)
            return log.read().splitlines()


def server_log() -> ServerLog:
    return ServerLog()


def cli(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """``qlarius-jobs ARGS`` as an operator runs it (JSON log lines; ``env`` adds settings)."""
    return subprocess.run(
        [str(BIN / "qlarius-jobs"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "QLARIUS_LOG_FORMAT": "json", **env},
    )


CONSOLE_SECRET = b"test-secret"  # the tests' consoles sign their CSRF tokens with it


def console_client(**options: Any) -> TestClient:
    """The console on the test database, in-process (``options``: ``ConsoleConfig``'s)."""
    from starlette.testclient import TestClient

    from qlarius_jobs.ops.console import ConsoleConfig, build_console

    config = ConsoleConfig(
        conninfo=TEST_DB.conninfo, secret=CONSOLE_SECRET, extra_hosts=("testserver",), **options
    )
    config.check()
    return TestClient(build_console(config), raise_server_exceptions=False)


def csrf_of(page: str) -> str:
    """The CSRF token a console page carries."""
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert match, "no CSRF token on the page"
    return match[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Seconds until ``predicate()`` holds (polled every 50 ms); fails the test past
    ``timeout``, saying ``what`` it waited for."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


def statuses(conn: psycopg.Connection, task_name: str) -> list[str]:
    """The states of a task's jobs, oldest first."""
    return [j["status"] for j in jobs(conn, task_name)]


def index_scans(conn: psycopg.Connection, index: str) -> int:
    """How many scans ``index`` has had, this session's included (each backend reports its own
    counts: a test flushes the session that scanned before reading)."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = %s", (index,)
    ).fetchone()
    assert row is not None, f"no index named {index}"
    return int(row[0])
