"""Integration tests run against a real PostgreSQL: the embedded cluster or
``QLARIUS_TEST_DATABASE_URL`` (a server where the tests may create databases). Never the
application database.

The session creates the test database from nothing and migrates it, once (a run never depends
on what an earlier run left). Before each test every table is emptied and every sequence
restarted, and any session an earlier test left behind is ended: each test starts from the
freshly migrated state. Procrastinate's own suite gives each test a copy of a template
database instead; measured here, on a durable cluster (fsync on), a copy costs ~300 ms (its
9 MB are written and flushed), TRUNCATE of every table ~250 ms, and this reset ~40 ms.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo as pg_conninfo
from psycopg import sql

from qlarius_jobs.db import migrate
from qlarius_jobs.dev import embedded
from qlarius_jobs.settings import Settings, get_settings


def _server_conninfo() -> str:
    explicit = os.environ.get("QLARIUS_TEST_DATABASE_URL")
    if explicit:
        return explicit
    return embedded.start(Settings(database_url=None))


_SERVER = _server_conninfo()
_NAME = f"{pg_conninfo.conninfo_to_dict(_SERVER).get('dbname', 'qlarius_jobs')}_test"
# The embedded cluster's log, when the tests use it (QLARIUS_TEST_SERVER_LOG otherwise).
_SERVER_LOG = os.environ.get("QLARIUS_TEST_SERVER_LOG") or (
    None
    if os.environ.get("QLARIUS_TEST_DATABASE_URL")
    else str(embedded.locate_cluster(Settings()).logfile)
)


@dataclass(frozen=True)
class TestDatabase:
    """The tests' database."""

    conninfo: str


TEST_DB = TestDatabase(pg_conninfo.make_conninfo(_SERVER, dbname=_NAME))
# Everything below, and every subprocess a test starts, talks to the test database.
os.environ["QLARIUS_DATABASE_URL"] = TEST_DB.conninfo
os.environ.setdefault("QLARIUS_LOG_FORMAT", "json")
os.environ.setdefault("QLARIUS_RETRY_BACKOFF_SECONDS", "0")  # retries run at once in tests
get_settings.cache_clear()


def _admin() -> psycopg.Connection:
    return psycopg.connect(pg_conninfo.make_conninfo(_SERVER, dbname="postgres"), autocommit=True)


@pytest.fixture(scope="session", autouse=True)
def logging_as_workers_do() -> None:
    """structlog set up as a worker process sets it up (the tests read its events)."""
    from qlarius_jobs.logs import configure_logging

    configure_logging()


@pytest.fixture(scope="session", autouse=True)
def migrated_database() -> Iterator[str]:
    """The test database, created from nothing and migrated once per session."""
    ident = sql.Identifier(_NAME)
    with _admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        # A transaction a test leaves open (a task it forgot) must fail the test, not hang
        # the suite: sessions idle in a transaction end after a minute.
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET idle_in_transaction_session_timeout = '60s'").format(
                ident
            )
        )
    migrate.migrate(TEST_DB.conninfo)
    yield TEST_DB.conninfo


_KEEP = ("qlarius_schema_migrations", "qlarius_procrastinate_schema")


def _reset(conn: psycopg.Connection) -> None:
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
        return
    with conn.transaction():
        # DELETE leaves the tables' files in place (TRUNCATE makes and flushes new ones);
        # as replica, no trigger or foreign key fires: every row goes, in any order.
        conn.execute("SET LOCAL session_replication_role = replica")
        for table in tables:
            conn.execute(f"DELETE FROM {table}")
        for sequence in sequences:
            conn.execute(f"ALTER SEQUENCE {sequence} RESTART")


@pytest.fixture(autouse=True)
def clean_database(migrated_database: str) -> Iterator[None]:
    with psycopg.connect(migrated_database, autocommit=True) as conn:
        _reset(conn)
    yield


@contextlib.contextmanager
def unmigrated_database() -> Iterator[str]:
    """A database of its own that nothing migrated (dropped afterwards)."""
    name = f"{_NAME}_unmigrated"
    ident = sql.Identifier(name)
    with _admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    try:
        yield pg_conninfo.make_conninfo(_SERVER, dbname=name)
    finally:
        with _admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


@pytest.fixture
def conninfo(migrated_database: str) -> str:
    return migrated_database


@pytest.fixture
async def conn() -> AsyncIterator[psycopg.AsyncConnection]:
    """An autocommit connection: each statement commits, as a job's helper would see it."""
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo, autocommit=True) as c:
        yield c


@pytest.fixture
def sync_conn() -> Iterator[psycopg.Connection]:
    with psycopg.connect(TEST_DB.conninfo, autocommit=True) as c:
        yield c


# --- a real PgBouncer, transaction mode ----------------------------------------------------


@pytest.fixture(scope="session")
def pgbouncer_for_tests(migrated_database: str):
    """Debian's pgbouncer in transaction mode in front of the tests' server (.ci/run installs
    it; without it these tests fail and say so)."""
    from qlarius_jobs.dev import pooler

    with pooler.pgbouncer(_SERVER) as bouncer:
        yield bouncer


@pytest.fixture
def pooled_conninfo(pgbouncer_for_tests) -> str:
    """The test database, reached through the pooler."""
    return pgbouncer_for_tests.conninfo(TEST_DB.conninfo)


# --- jobs ---------------------------------------------------------------------------------


@functools.cache
def project_app():
    """The project's app (every job), on the test database (``QLARIUS_DATABASE_URL``)."""
    from qlarius_jobs.app import build_app

    return build_app()


@pytest.fixture
async def app():
    """The real Procrastinate app, open on the test database."""
    async with project_app().open_async():
        yield project_app()


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


async def drain(rounds: int = 20, queues: set[str] | None = None) -> None:
    """Run a real in-process worker on every queue (or on ``queues``) until no job is due and
    no pending sync or reconcile is left (for those queues).

    Without the periodic schedule: a tick (the hourly backfill, deferred up to 10 minutes
    late by a starting worker) would add jobs that the tests did not ask for.
    """
    from qlarius_jobs import testing
    from qlarius_jobs.worker.procrastinate_adapter import is_open

    app = project_app()
    if is_open(app):
        await testing.drain(app, sorted(queues) if queues else None, rounds=rounds)
        return
    async with app.open_async():
        await testing.drain(app, sorted(queues) if queues else None, rounds=rounds)


def work_left(queues: set[str] | None = None) -> int:
    """``qlarius_jobs.testing.work_left``: jobs due or running, and pending work."""
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
    from psycopg.types.json import Jsonb

    with psycopg.connect(TEST_DB.conninfo, autocommit=True) as conn:
        return conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) VALUES (%s, %s, %s) "
            "RETURNING id",
            (queue, task_name, Jsonb(args)),
        ).fetchone()[0]


def defer_with_cli(task: str, args: dict, env: dict | None = None) -> None:
    """Defer a job the way an operator would: `procrastinate defer` in a subprocess."""
    import json

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


BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port nobody listens on now, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WorkerProcess:
    """``qlarius-jobs worker`` in a subprocess, its output going to a file: a pipe that
    nobody reads until the end fills up and blocks the worker's event loop on a log write."""

    def __init__(self, *args: str, env: dict | None = None, log_dir: Path | None = None) -> None:
        fd, name = tempfile.mkstemp(prefix="worker-", suffix=".log", dir=log_dir)
        self.log_path = Path(name)
        with os.fdopen(fd, "w") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [str(BIN / "qlarius-jobs"), "worker", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def poll(self) -> int | None:
        return self.proc.poll()

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 60) -> str:
        """SIGTERM (if still running), wait, and return everything it wrote."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        return self.output()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class ServerLog:
    """The PostgreSQL server's log from now on."""

    def __init__(self) -> None:
        if _SERVER_LOG is None:
            raise RuntimeError(
                "set QLARIUS_TEST_SERVER_LOG to the server's log file to run this test "
                "against QLARIUS_TEST_DATABASE_URL"
            )
        self.path = Path(_SERVER_LOG)
        self.start = self.path.stat().st_size

    def new_lines(self) -> list[str]:
        with self.path.open(errors="replace") as log:
            log.seek(self.start)
            return log.read().splitlines()


def server_log() -> ServerLog:
    return ServerLog()
