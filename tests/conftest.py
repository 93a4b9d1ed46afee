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
