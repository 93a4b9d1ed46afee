"""Where the console reads and where it writes: two objects on ``app.state``, named for what
they do, so that no handler chooses a server by care.

- ``reads`` (``Reads``): every page and ``/metrics``. On the streaming standby named by
  ``QLARIUS_READ_DATABASE_URL`` when it is set, else on the primary. Every connection it hands
  out is in a transaction whose first statement is ``SET TRANSACTION READ ONLY``: a page
  cannot write on either server (and a standby refuses writes anyway).
- ``writes`` (``Writes``): every action (and a bulk action's confirmation, which counts what
  the action will find): always the primary, ``QLARIUS_DATABASE_URL``.

Reading your own writes: an action on the primary shows on a standby only once the standby has
replayed it. So, when the pages read a standby, an action's redirect carries a cookie holding
the primary's WAL position after the action; a page read while the standby has not replayed
that far is read from the primary instead (still read-only), and says so; once it has, the
cookie is ignored (it lapses after ``WROTE_SECONDS``). The operator sees the change at once,
and a later reload never shows the job going back to its state before the action.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse

from qlarius_jobs.db import connection
from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.logs import get_logger

log = get_logger(__name__)

SQL = QueryFile.of(__file__)
COOKIE = "qlarius_wrote"
WROTE_SECONDS = 60  # how long an action's cookie may send pages to the primary, at most
LSN = re.compile(r"[0-9A-F]{1,8}/[0-9A-F]{1,8}")
TIMEOUT_SECONDS = 5
APPLICATION = "qlarius-jobs:console"


class ReadServerUnavailable(HTTPException):
    """The standby does not answer: pages cannot be read (actions still go to the primary)."""

    def __init__(self) -> None:
        super().__init__(
            503,
            detail="the read server (QLARIUS_READ_DATABASE_URL, a standby) is unavailable: "
            "pages cannot be read now; actions still go to the primary",
        )


class RecoveryConflict(HTTPException):
    """The standby cancelled the page's reads to go on replaying the primary's changes."""

    def __init__(self) -> None:
        super().__init__(
            503,
            detail="the standby cancelled this page's reads to replay the primary's changes "
            "(conflict with recovery); reload the page",
        )


def pool(conninfo: str) -> psycopg_pool.AsyncConnectionPool:
    """The console's pool on one server (opened and closed by the app's lifespan)."""
    return psycopg_pool.AsyncConnectionPool(
        conninfo,
        min_size=2,
        max_size=10,  # the overview reads side by side
        open=False,
        timeout=TIMEOUT_SECONDS,  # a page waits this long for a connection, then 503
        kwargs={
            "autocommit": True,
            "application_name": APPLICATION,
            "connect_timeout": TIMEOUT_SECONDS,
            **connection.pooler_kwargs(),
        },
    )


@contextlib.contextmanager
def read_only(conninfo: str) -> Iterator[psycopg.Connection]:
    """A connection of its own in a read-only transaction (the synchronous readers: the
    controls' pages, the overview's schedules, /metrics)."""
    with (
        psycopg.connect(
            conninfo,
            autocommit=True,
            connect_timeout=TIMEOUT_SECONDS,
            application_name=APPLICATION,
            **connection.pooler_kwargs(),
        ) as conn,
        conn.transaction(),
    ):
        SQL.execute_sync(conn, "read_only")
        yield conn


def replica_status(conn: psycopg.Connection) -> dict[str, Any] | None:
    """The read server's lag, for /metrics (see ``replica_status`` in the .sql file)."""
    return SQL.one_sync(conn, "replica_status", wrote=None)


def primary_up(conninfo: str) -> bool:
    """Whether the primary answers a trivial query (/metrics, while the pages read a standby)."""
    try:
        with read_only(conninfo) as conn:
            return SQL.one_sync(conn, "primary_up") is not None
    except psycopg.Error as exc:
        log.warning("metrics: primary unavailable", error=str(exc).strip()[:300])
        return False


def _mapped(exc: Exception, standby: bool) -> Exception:
    """A standby's failure as a page's one line; anything else as it came."""
    if not standby:
        return exc
    if isinstance(exc, psycopg.errors.SerializationFailure):
        log.warning("console: recovery conflict on the standby", error=str(exc).strip()[:300])
        return RecoveryConflict()
    if isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolTimeout):
        log.warning("console: read server unavailable", error=str(exc).strip()[:300])
        return ReadServerUnavailable()
    return exc


@dataclass(frozen=True)
class ReadFrom:
    """Where one request reads, and what its page says about it: ``standby`` (reading the
    standby), its ``lag_seconds`` (None: it replayed nothing since it started; 0 when
    ``caught_up``: streaming, and all it received is replayed) and ``paused``;
    ``after_action``: read from the primary, the standby not having replayed the operator's
    last action yet."""

    pool: psycopg_pool.AsyncConnectionPool
    conninfo: str
    standby: bool = False
    lag_seconds: float | None = None
    paused: bool = False
    caught_up: bool = False  # streaming, everything received replayed
    after_action: bool = False
    replica: bool = False  # a read server is configured (the page says where it read)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A pooled connection in a read-only transaction."""
        try:
            async with self.pool.connection() as conn, conn.transaction():
                await SQL.execute(conn, "read_only")
                yield conn
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise _mapped(exc, self.standby) from None

    @contextlib.contextmanager
    def connect_sync(self) -> Iterator[psycopg.Connection]:
        """A connection of its own in a read-only transaction, for synchronous readers."""
        try:
            with read_only(self.conninfo) as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise _mapped(exc, self.standby) from None


class Reads:
    """Every page's reads: the standby's pool when one is configured, else the primary's."""

    def __init__(
        self,
        primary: psycopg_pool.AsyncConnectionPool,
        primary_conninfo: str,
        standby_conninfo: str | None,
    ) -> None:
        self.primary = ReadFrom(primary, primary_conninfo)
        self.standby = (
            ReadFrom(pool(standby_conninfo), standby_conninfo, standby=True, replica=True)
            if standby_conninfo
            else None
        )

    async def open(self) -> None:
        if self.standby is not None:
            await self.standby.pool.open()

    async def close(self) -> None:
        if self.standby is not None:
            await self.standby.pool.close()

    async def where(self, request: Request) -> ReadFrom:
        """Where this request reads (decided once per request): the standby, with its lag;
        the primary when none is configured, or when the standby has not replayed the
        operator's last action yet."""
        known = getattr(request.state, "read_from", None)
        if known is not None:
            return known
        if self.standby is None:
            where = self.primary
        else:
            wrote = request.cookies.get(COOKIE)
            async with self.standby.connection() as conn:
                row = await SQL.one(
                    conn, "replica_status", wrote=wrote if wrote and LSN.fullmatch(wrote) else None
                )
            assert row is not None
            where = dataclasses.replace(
                self.standby,
                lag_seconds=row["lag_seconds"],
                paused=row["paused"],
                caught_up=row["caught_up"],
            )
            if row["replayed_action"] is False:
                # the operator's last action is not replayed yet: this page reads the primary
                where = dataclasses.replace(
                    where,
                    pool=self.primary.pool,
                    conninfo=self.primary.conninfo,
                    standby=False,
                    after_action=True,
                )
        request.state.read_from = where
        return where


class Writes:
    """Every action: the primary's pool, and connections of their own to it for the
    synchronous controls. ``track`` (the pages read a standby): an action's redirect carries
    the cookie that keeps the operator's next pages on the primary until the standby caught
    up."""

    def __init__(
        self, primary: psycopg_pool.AsyncConnectionPool, conninfo: str, track: bool
    ) -> None:
        self.pool = primary
        self.conninfo = conninfo
        self.track = track

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self.pool.connection() as conn, conn.transaction():
            yield conn

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self.pool.connection() as conn:
            yield conn

    def connect_sync(self) -> psycopg.Connection:
        return psycopg.connect(
            self.conninfo,
            autocommit=True,
            connect_timeout=TIMEOUT_SECONDS,
            application_name=APPLICATION,
            **connection.pooler_kwargs(),
        )

    async def redirect(self, url: str) -> RedirectResponse:
        """The 303 after an action (committed by now): with the cookie when it is tracked."""
        response = RedirectResponse(url, 303)
        if self.track:
            async with self.pool.connection() as conn:
                row = await SQL.one(conn, "wal_position")
            assert row is not None
            response.set_cookie(
                COOKIE, row["lsn"], max_age=WROTE_SECONDS, path="/", httponly=True, samesite="lax"
            )
        return response
