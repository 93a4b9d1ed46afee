"""The integration tests' fixtures; what they share otherwise is in ``support.py``. Nothing here
runs at import: the session's first fixture points this process (and every subprocess a test
starts) at the test database.

The session creates the test database from nothing and migrates it, once (a run never depends
on what an earlier run left). Before each test every table is emptied and every sequence
restarted, and any session an earlier test left behind is ended: each test starts from the
freshly migrated state. Procrastinate's own suite gives each test a copy of a template
database instead; measured here, on a durable cluster (fsync on), a copy costs ~300 ms (its
9 MB are written and flushed), TRUNCATE of every table ~250 ms, and this reset ~40 ms.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg import sql

from qlarius_jobs.db import migrate
from qlarius_jobs.settings import Settings, get_settings
from tests.integration.support import TEST_DB, create_database, project_app, reset


@pytest.fixture(scope="session", autouse=True)
def test_environment() -> Iterator[None]:
    """This process, and every subprocess a test starts, talks to the test database."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("QLARIUS_DATABASE_URL", TEST_DB.conninfo)
        env.setenv("QLARIUS_LOG_FORMAT", "json")
        env.setenv("QLARIUS_RETRY_BACKOFF_SECONDS", "0")  # retries run at once in tests
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


@pytest.fixture(scope="session", autouse=True)
def logging_as_workers_do(test_environment: None) -> None:
    """structlog set up as a worker process sets it up (the tests read its events)."""
    from qlarius_jobs.logs import configure_logging

    configure_logging()


@pytest.fixture(scope="session", autouse=True)
def migrated_database(test_environment: None) -> Iterator[str]:
    """The test database, created from nothing and migrated once per session."""
    create_database(TEST_DB.name)
    with TEST_DB.admin() as conn:
        # A transaction a test leaves open (a task it forgot) must fail the test, not hang
        # the suite: sessions idle in a transaction end after a minute.
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET idle_in_transaction_session_timeout = '60s'").format(
                sql.Identifier(TEST_DB.name)
            )
        )
    migrate.migrate(TEST_DB.conninfo)
    yield TEST_DB.conninfo


@pytest.fixture(autouse=True)
def clean_database(migrated_database: str) -> Iterator[None]:
    with psycopg.connect(migrated_database, autocommit=True) as conn:
        reset(conn)
    yield


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

    with pooler.pgbouncer(TEST_DB.server) as bouncer:
        yield bouncer


@pytest.fixture
def pooled_conninfo(pgbouncer_for_tests) -> str:
    """The test database, reached through the pooler."""
    return pgbouncer_for_tests.conninfo(TEST_DB.conninfo)


# --- a streaming standby of the tests' server ----------------------------------------------


@pytest.fixture(scope="session")
def standby_server(migrated_database: str):
    """A streaming standby of the embedded cluster (``dev/standby.py``: ``pg_basebackup -R``,
    its own data folder, socket and port), for the console reading from a standby; stopped and
    removed at the session's end."""
    if os.environ.get("QLARIUS_TEST_DATABASE_URL"):
        pytest.fail(
            "the standby tests make a standby of the embedded cluster (pg_basebackup of its "
            "data folder, as its server user): unset QLARIUS_TEST_DATABASE_URL to run them"
        )
    from qlarius_jobs.dev import embedded, standby

    server = standby.start(embedded.locate_cluster(Settings(database_url=None)))
    try:
        yield server
    finally:
        standby.stop(server)


# --- jobs ---------------------------------------------------------------------------------


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
