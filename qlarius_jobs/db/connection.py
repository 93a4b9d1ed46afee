"""Which database the process talks to, and how the job runtime's connections are set up.

The job runtime uses the database it is given: ``DATABASE_URL`` (or ``QLARIUS_DATABASE_URL``),
or whatever its ``App`` was built with. The embedded cluster (``qlarius_jobs/dev/embedded.py``)
is the doors' business (``app.door_database``): this module never loads it.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg_pool
from psycopg import conninfo as pg_conninfo

from qlarius_jobs.settings import Settings, get_settings

DEFAULT_PORT = 5432


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or started; the message says how to fix it."""


def describe(info: str) -> str:
    """``database "x" on host y`` for messages, without the password."""
    try:
        params = pg_conninfo.conninfo_to_dict(info)
    except psycopg.ProgrammingError:
        return "the configured database (unparsable DATABASE_URL)"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or DEFAULT_PORT
    return f'database "{params.get("dbname", "?")}" on {host}:{port}'


def check_connection(info: str) -> None:
    """Raise ``DatabaseUnavailable`` with one clear line when ``info`` cannot be reached."""
    try:
        with psycopg.connect(info, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailable(f"cannot connect to {describe(info)}: {reason}") from exc


def ready_conninfo(settings: Settings | None = None) -> str:
    """The configured database, checked reachable."""
    settings = settings or get_settings()
    if not settings.database_url:
        raise DatabaseUnavailable(
            "no database configured: set DATABASE_URL (or QLARIUS_DATABASE_URL)"
        )
    check_connection(settings.database_url)
    return settings.database_url


class PoolerNotDeclared(ValueError):
    """The database is reached through a transaction pooler, and the settings do not say so."""


POOLER_PROBE_ROUNDS = 3


def transactions_share_a_session(info: str, rounds: int = POOLER_PROBE_ROUNDS) -> bool:
    """Whether every transaction of one client connection runs on the same server session
    (a direct connection, or a session pooler), as LISTEN and prepared statements need. False
    behind a transaction (or statement) pooler such as PgBouncer in transaction mode.

    The probe: connection A reads its backend's pid; connection B opens a transaction (so a
    pooler must give it a server session of its own, and PgBouncer hands out the one used
    last: A's) and reads its pid; A reads again. Directly, B's pid is another one and A's is
    unchanged. Through a transaction pooler, B got A's session or A got another one. Several
    rounds, in case another client of the pooler took A's session in between."""
    with (
        psycopg.connect(info, autocommit=True, prepare_threshold=None, connect_timeout=10) as a,
        psycopg.connect(info, prepare_threshold=None, connect_timeout=10) as b,
    ):
        for _ in range(rounds):
            first = _backend_pid(a)
            held = _backend_pid(b)  # b is not autocommit: its transaction stays open
            try:
                if held == first or _backend_pid(a) != first:
                    return False
            finally:
                b.rollback()
    return True


def _backend_pid(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def check_pooling(info: str, settings: Settings | None = None) -> None:
    """Refuse, in one line naming the setting, a worker that would LISTEN and prepare
    statements through a transaction pooler (the pooler then hands that session state to
    other clients: a notification reaches an unrelated session, a prepared statement exists
    twice and the worker stops with a bare 'Database error')."""
    settings = settings or get_settings()
    if settings.behind_pooler:
        return
    if not transactions_share_a_session(info):
        raise PoolerNotDeclared(
            f"{describe(info)} is reached through a transaction pooler (two transactions of "
            "one connection ran on different server sessions); set QLARIUS_BEHIND_POOLER=true "
            "(workers then poll instead of LISTEN and never prepare statements), or connect "
            "directly"
        )


def pooler_kwargs(settings: Settings | None = None) -> dict[str, Any]:
    """Connection options that a transaction pooler needs: no prepared statements (psycopg
    would prepare a query run five times, on a session the next transaction may not get)."""
    settings = settings or get_settings()
    return {"prepare_threshold": None} if settings.behind_pooler else {}


def application_name() -> str:
    """How this process's connections are named in ``pg_stat_activity``."""
    return f"qlarius-jobs:{os.getpid()}"


async def configure_connection(conn: psycopg.AsyncConnection) -> None:
    """Every pooled connection of the job runtime, when the pool opens it."""
    # The jobs' locking protocol relies on READ COMMITTED (each statement sees what committed
    # before it: see jobs/drains.py), whatever the server's default_transaction_isolation says.
    await conn.set_isolation_level(psycopg.IsolationLevel.READ_COMMITTED)
    if not get_settings().behind_pooler:  # a session setting would leak to a pooler's others
        # A killed worker's statement is cancelled (and its locks released) within seconds,
        # not when it would have finished: the server checks that the client is still there.
        await conn.execute("SET client_connection_check_interval = '2s'")
        if not conn.autocommit:
            await conn.commit()


# A connection given out again within this many seconds of its last checkout is not checked
CHECK_AFTER_IDLE_SECONDS = 1.0
_last_checkout: weakref.WeakKeyDictionary[psycopg.AsyncConnection, float] = (
    weakref.WeakKeyDictionary()
)


async def check_unless_just_used(conn: psycopg.AsyncConnection) -> None:
    """The pool's check of a connection it gives out (Procrastinate's default is
    ``check_connection``: a round trip before every query), made only when the connection was
    last given out over ``CHECK_AFTER_IDLE_SECONDS`` ago: after a quiet spell, when a server
    restart or a network cut could have left it dead. A busy worker's connections, given out
    every few milliseconds, skip it (one round trip less per query); a connection that died
    meanwhile fails its query as one would fail in a restart mid-query, which the worker
    rides out (resilience.py)."""
    now = time.monotonic()
    last = _last_checkout.get(conn)
    _last_checkout[conn] = now
    if last is None or now - last >= CHECK_AFTER_IDLE_SECONDS:
        await psycopg_pool.AsyncConnectionPool.check_connection(conn)


def pool_factory(
    database: Callable[[], str], max_size: int | None = None, *, worker_process: bool = False
) -> Callable[..., psycopg_pool.AsyncConnectionPool]:
    """Procrastinate's pool factory for an app: ``database()`` is resolved each time the pool
    opens, not when the app is built; ``max_size`` caps the pool (a worker process that found
    too few connections free). Only a ``worker_process``'s pool, whose every statement is
    ridden out when its connection fails (resilience.py), skips the check of a connection just
    used; an application's pool checks each one it gives out (Procrastinate's default), so a
    restart or failover never fails the application's next transaction."""

    def open_pool(**kwargs: Any) -> psycopg_pool.AsyncConnectionPool:
        kwargs["conninfo"] = database()
        kwargs["configure"] = configure_connection
        if worker_process:
            kwargs["check"] = check_unless_just_used
        if max_size is not None:
            kwargs["max_size"] = min(kwargs["max_size"], max_size)
            kwargs["min_size"] = min(kwargs["min_size"], kwargs["max_size"])
        return psycopg_pool.AsyncConnectionPool(**kwargs)

    return open_pool
