"""Tests run against a real PostgreSQL: the embedded cluster (database ``qlarius_jobs_test``)
or ``QLARIUS_TEST_DATABASE_URL``. Never the application database: every test starts by
emptying the tables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

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
# The embedded cluster's log, when the tests use it (QLARIUS_TEST_SERVER_LOG otherwise).
_SERVER_LOG = os.environ.get("QLARIUS_TEST_SERVER_LOG") or (
    None
    if os.environ.get("QLARIUS_TEST_DATABASE_URL")
    else str(database.locate_cluster(Settings()).logfile)
)
# Everything below, and every subprocess a test starts, talks to the test database.
os.environ["QLARIUS_DATABASE_URL"] = TEST_CONNINFO
os.environ.setdefault("QLARIUS_LOG_FORMAT", "json")
get_settings.cache_clear()
migrations.migrate(TEST_CONNINFO)

_KEEP = ("qlarius_schema_migrations", "qlarius_procrastinate_schema")


def _guard_against_hangs(conn: psycopg.Connection) -> None:
    """A transaction a test leaves open (a task it forgot) must fail the suite, not hang it:
    the test database ends sessions idle in a transaction for a minute."""
    dbname = conn.info.dbname
    conn.execute(
        psycopg.sql.SQL("ALTER DATABASE {} SET idle_in_transaction_session_timeout = '60s'").format(
            psycopg.sql.Identifier(dbname)
        )
    )


with psycopg.connect(TEST_CONNINFO, autocommit=True) as _conn:
    _guard_against_hangs(_conn)


def _clean(conn: psycopg.Connection) -> None:
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> ALL(%s)",
            (list(_KEEP),),
        )
    ]
    conn.execute("SET lock_timeout = '30s'")  # a lock left behind fails the test, loudly
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


async def drain(rounds: int = 20, queues: set[str] | None = None) -> None:
    """Run a real in-process worker on every queue (or on ``queues``) until no job is due and
    no pending sync or reconcile is left (for those queues).

    Without the periodic schedule: a tick (the hourly backfill, deferred up to 10 minutes
    late by a starting worker) would add jobs that the tests did not ask for.
    """
    from qlarius_jobs import runner

    configured = runner.configured_queues()
    chosen = {q: c for q, c in configured.items() if queues is None or q in queues}
    for _ in range(rounds):
        await runner.run_workers(
            chosen,
            wait=False,
            install_signal_handlers=False,
            fetch_job_polling_interval=0.05,
            periodic=False,
        )
        if not work_left(set(chosen)):
            return
    raise AssertionError("jobs still due after draining")


def work_left(queues: set[str] | None = None) -> int:
    """Jobs due or running (in ``queues``), plus the pending syncs and reconciles that a drain
    on those queues could take now (not rows left for a target a job holds)."""
    queues = queues or {"default", "targets", "offers", "maintenance"}
    pending = (
        "SELECT count(*) FROM {table} p WHERE (p.retry_after IS NULL OR p.retry_after <= now()) "
        "AND (p.target_id IS NULL OR p.target_id IN (SELECT target_id FROM qlarius_target_locks "
        "     WHERE scope = '{scope}' FOR SHARE SKIP LOCKED)) AND '{queue}' = ANY(%(queues)s)"
    )
    with psycopg.connect(TEST_CONNINFO) as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing') "
            "        AND (scheduled_at IS NULL OR scheduled_at <= now()) "
            "        AND queue_name = ANY(%(queues)s)) "
            f" + ({pending.format(table='qlarius_pending_syncs', scope='populations', queue='targets')})"
            f" + ({pending.format(table='qlarius_pending_reconciles', scope='offers', queue='offers')})",
            {"queues": list(queues)},
        ).fetchone()[0]


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

    with psycopg.connect(TEST_CONNINFO, autocommit=True) as conn:
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
        self._conn = psycopg.connect(TEST_CONNINFO)
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
