"""A worker process's pool checks a connection it gives out only after a quiet spell
(``connection.check_unless_just_used``): a busy worker's queries go without the extra round
trip, and a connection that died while idle is still replaced before anyone uses it. An
application's pool (``build_app()`` without ``worker_process``) checks every one it gives out,
so a connection killed just after its last use never fails the application's next
transaction."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg
import psycopg_pool
import pytest

from qlarius_jobs.db import connection

QUIET = 1.0  # seconds: the threshold these tests run with (a 0.3 s one was within a stall's
# reach on a loaded runner: the check then ran on a connection given out again at once)


@contextlib.asynccontextmanager
async def one_connection_pool(
    conninfo: str, *, worker_process: bool
) -> AsyncIterator[psycopg_pool.AsyncConnectionPool]:
    """A one-connection pool as Procrastinate opens an app's (``pool_factory``), with the
    arguments Procrastinate gives it (its check of every connection among them)."""
    opened = connection.pool_factory(lambda: conninfo, worker_process=worker_process)(
        min_size=1,
        max_size=1,
        open=False,
        kwargs={"autocommit": True},
        check=psycopg_pool.AsyncConnectionPool.check_connection,
    )
    await opened.open(wait=True)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def pool(
    conninfo: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[psycopg_pool.AsyncConnectionPool]:
    """A worker process's pool."""
    monkeypatch.setattr(connection, "CHECK_AFTER_IDLE_SECONDS", QUIET)
    async with one_connection_pool(conninfo, worker_process=True) as opened:
        yield opened


async def _pid_after(pool: psycopg_pool.AsyncConnectionPool, statement: str) -> int:
    async with pool.connection() as conn:
        await conn.execute(statement)  # type: ignore[arg-type]
        row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
        assert row is not None
        return int(row[0])


def _last_query(sync_conn: psycopg.Connection, pid: int) -> str:
    row = sync_conn.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    assert row is not None, f"backend {pid} is gone"
    return str(row[0])


async def test_a_connection_given_out_again_at_once_is_not_checked_and_one_left_quiet_is(
    pool: psycopg_pool.AsyncConnectionPool, sync_conn: psycopg.Connection
) -> None:
    pid = await _pid_after(pool, "SELECT 1")
    # at once: the pool hands it out with no query of its own (the server saw none since)
    async with pool.connection() as conn:
        assert _last_query(sync_conn, pid) == "SELECT pg_backend_pid()"
        await conn.execute("SELECT 2")
    await asyncio.sleep(QUIET * 1.5)
    # after a quiet spell: the check's empty query ran before the connection was given out
    async with pool.connection():
        assert _last_query(sync_conn, pid) == ""


async def test_a_connection_that_died_while_quiet_is_replaced_before_use(
    pool: psycopg_pool.AsyncConnectionPool, sync_conn: psycopg.Connection
) -> None:
    pid = await _pid_after(pool, "SELECT 1")
    sync_conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    await asyncio.sleep(QUIET * 1.5)
    replacement = await _pid_after(pool, "SELECT 1")  # would raise on the dead one
    assert replacement != pid


async def test_an_applications_pool_replaces_a_connection_killed_just_after_its_last_use(
    conninfo: str, sync_conn: psycopg.Connection
) -> None:
    async with one_connection_pool(conninfo, worker_process=False) as app_pool:
        for _ in range(3):
            pid = await _pid_after(app_pool, "SELECT 1")
            sync_conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            # at once, no quiet spell: the check finds it dead and the pool gives out another
            replacement = await _pid_after(app_pool, "SELECT 1")
            assert replacement != pid
