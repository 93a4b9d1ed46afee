"""Named queries: each module keeps its SQL in one ``.sql`` file at its own path under
``sql/queries/`` (``sql/queries/jobs/populations.sql`` for ``qlarius_jobs/jobs/populations.py``).

A file holds many queries, each under a header naming it and the shape of its result, as in
Procrastinate's ``queries.sql`` and River's sqlc files::

    -- name: mark_target_populated :exec
    -- What it does, in a line or two.
    UPDATE targets SET ... WHERE id = %(target_id)s

Shapes: ``:one`` (a row, or None), ``:many`` (rows), ``:count`` (how many rows the statement
affected or returned), ``:exec`` (nothing). The shape is declared once, in the file, and each
call says which it expects (``one``, ``many``, ``count``, ``execute``): a mismatch, an unknown
name, a duplicate name or a malformed header is an error, and ``tests/unit/test_queries.py``
checks every call in the package against the files (its name, its shape, the names of its
parameters and ``tables``), and that every query is used.

A module loads its file at import (``SQL = QueryFile.of(__file__)``): a file that does not
parse fails the import, not a job at 3 a.m.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString, cast

from psycopg import AsyncConnection, Connection, sql
from psycopg.rows import dict_row

_HEADER = re.compile(r"^--\s*name:\s*(?P<name>\S+)\s*(?::(?P<shape>\S+))?\s*$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Shape(enum.StrEnum):
    ONE = "one"
    MANY = "many"
    COUNT = "count"
    EXEC = "exec"


class QueryError(ValueError):
    """A query file that does not parse, or a query run by a name or shape it does not have."""


@dataclass(frozen=True)
class Query:
    name: str
    shape: Shape
    text: LiteralString
    path: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


Statement = LiteralString | sql.Composed


def parse(path: Path, text: str) -> dict[str, Query]:
    """The queries of one file, by name. Text before the first header is the file's own
    comment and must hold no statement."""
    queries: dict[str, Query] = {}
    current: tuple[str, Shape, int] | None = None
    body: list[str] = []

    def close() -> None:
        if current is None:
            if any(ln.strip() and not ln.lstrip().startswith("--") for ln in body):
                raise QueryError(f"{path}: a statement before the first '-- name:' header")
            return
        name, shape, line = current
        code = [ln for ln in body if not ln.lstrip().startswith("--")]
        statement = "\n".join(code).strip()
        if not statement:
            raise QueryError(f"{path}:{line}: query {name} has no statement")
        # Sent without its comments (the doc of a statement can be longer than the statement,
        # and pg_stat_activity keeps only the first track_activity_query_size bytes), under its
        # name: an operator looking at pg_stat_activity or the server log sees which one it is.
        text = f"-- qlarius: {name}\n{statement}\n"
        queries[name] = Query(name, shape, cast(LiteralString, text), path, line)

    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header is None:
            if re.match(r"^--\s*name\s*:", line):
                raise QueryError(f"{path}:{number}: malformed header {line.strip()!r}")
            body.append(line)
            continue
        close()
        name, shape_text = header["name"], header["shape"]
        if not _NAME.match(name):
            raise QueryError(f"{path}:{number}: query name {name!r} is not snake_case")
        if shape_text not in {s.value for s in Shape}:
            raise QueryError(
                f"{path}:{number}: query {name} needs a shape, one of "
                f"{', '.join(':' + s for s in Shape)} (got {shape_text!r})"
            )
        if name in queries or (current is not None and current[0] == name):
            raise QueryError(f"{path}:{number}: query {name} is defined twice")
        current, body = (name, Shape(shape_text), number), []
    close()
    return queries


_PACKAGE = Path(__file__).resolve().parents[1]  # qlarius_jobs/


def sql_root() -> Path:
    """The project's SQL: ``sql/`` at the top of a checkout, which the wheel carries inside
    the package as ``qlarius_jobs/_sql/`` (pyproject's ``force-include``)."""
    for candidate in (_PACKAGE / "_sql", _PACKAGE.parent / "sql"):
        if (candidate / "monitoring.sql").is_file():
            return candidate
    raise FileNotFoundError(
        f"the project's SQL is missing: neither {_PACKAGE / '_sql'} (an installed wheel) nor "
        f"{_PACKAGE.parent / 'sql'} (a checkout) holds monitoring.sql"
    )


class QueryFile:
    """The named queries of one ``.sql`` file, and the way to run them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.queries = parse(path, path.read_text(encoding="utf-8"))

    @classmethod
    def of(cls, module_file: str) -> QueryFile:
        """A module's queries, at the same path under ``sql/queries/``:
        ``sql/queries/jobs/populations.sql`` for ``qlarius_jobs/jobs/populations.py``."""
        relative = Path(module_file).resolve().relative_to(_PACKAGE).with_suffix(".sql")
        return cls(sql_root() / "queries" / relative)

    @classmethod
    def named(cls, relative: str) -> QueryFile:
        """A file several modules share: ``named("bench/bench")``."""
        return cls(sql_root() / "queries" / f"{relative}.sql")

    def __repr__(self) -> str:
        return f"QueryFile({self.path.name}: {len(self.queries)} queries)"

    def __iter__(self) -> Iterator[Query]:
        return iter(self.queries.values())

    def get(self, name: str, shape: Shape | None = None) -> Query:
        try:
            query = self.queries[name]
        except KeyError:
            raise QueryError(f"no query named {name!r} in {self.path}") from None
        if shape is not None and query.shape is not shape:
            raise QueryError(
                f"query {name} is declared :{query.shape} ({query.where}), run as :{shape}"
            )
        return query

    def statement(self, name: str, tables: dict[str, str] | None = None) -> Statement:
        """The query's text; ``tables`` fills its ``{placeholders}`` with quoted names."""
        text = self.get(name).text
        if not tables:
            return text
        return sql.SQL(text).format(**{k: sql.Identifier(v) for k, v in tables.items()})

    # Queries run unprepared: their optional filters (``%(ids)s IS NULL OR ...``) then fold
    # away at planning time, so each call gets the plan for its own scope. Without
    # parameters, the text is sent as it is (a ``%`` in a function body stays a ``%``).

    async def _run(
        self, conn: AsyncConnection, name: str, shape: Shape, tables: Any, params: Any
    ) -> Any:
        self.get(name, shape)
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(self.statement(name, tables), params or None, prepare=False)
            if shape is Shape.ONE:
                return await cur.fetchone()
            if shape is Shape.MANY:
                return await cur.fetchall()
            return cur.rowcount

    async def one(
        self,
        conn: AsyncConnection,
        query: str,
        /,
        *,
        tables: dict[str, str] | None = None,
        **params: Any,
    ) -> dict[str, Any] | None:
        return await self._run(conn, query, Shape.ONE, tables, params)

    async def many(
        self,
        conn: AsyncConnection,
        query: str,
        /,
        *,
        tables: dict[str, str] | None = None,
        **params: Any,
    ) -> list[dict[str, Any]]:
        return await self._run(conn, query, Shape.MANY, tables, params)

    async def count(
        self,
        conn: AsyncConnection,
        query: str,
        /,
        *,
        tables: dict[str, str] | None = None,
        **params: Any,
    ) -> int:
        return await self._run(conn, query, Shape.COUNT, tables, params)

    async def execute(
        self,
        conn: AsyncConnection,
        query: str,
        /,
        *,
        tables: dict[str, str] | None = None,
        **params: Any,
    ) -> None:
        await self._run(conn, query, Shape.EXEC, tables, params)

    async def one_via_connector(self, connector: Any, query: str, /, **params: Any) -> Any:
        """A ``:one`` query run by a Procrastinate connector (its own pooled connection and
        transaction), so that its errors come wrapped as Procrastinate's
        ``ConnectorException``, as from any job manager call. The query must return a row."""
        return await connector.execute_query_one_async(
            query=self.get(query, Shape.ONE).text, **params
        )

    def _run_sync(self, conn: Connection, name: str, shape: Shape, tables: Any, params: Any) -> Any:
        self.get(name, shape)
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(self.statement(name, tables), params or None, prepare=False)
            if shape is Shape.ONE:
                return cur.fetchone()
            if shape is Shape.MANY:
                return cur.fetchall()
            return cur.rowcount

    def one_sync(
        self,
        conn: Connection,
        query: str,
        /,
        *,
        tables: dict[str, str] | None = None,
        **params: Any,
    ) -> dict[str, Any] | None:
        return self._run_sync(conn, query, Shape.ONE, tables, params)

    def many_sync(
        self,
        conn: Connection,
        query: str,
        /,
        *,
        tables: dict[str, str] | None = None,
        **params: Any,
    ) -> list[dict[str, Any]]:
        return self._run_sync(conn, query, Shape.MANY, tables, params)

    def count_sync(
        self,
        conn: Connection,
        query: str,
        /,
        *,
        tables: dict[str, str] | None = None,
        **params: Any,
    ) -> int:
        return self._run_sync(conn, query, Shape.COUNT, tables, params)

    def execute_sync(
        self,
        conn: Connection,
        query: str,
        /,
        *,
        tables: dict[str, str] | None = None,
        **params: Any,
    ) -> None:
        self._run_sync(conn, query, Shape.EXEC, tables, params)


# How a call names its query: method -> (position of the name argument, the shape it runs).
# The unit test reads calls with this table.
CALL_SHAPES: dict[str, tuple[int, Shape | None]] = {
    "one": (1, Shape.ONE),
    "many": (1, Shape.MANY),
    "count": (1, Shape.COUNT),
    "execute": (1, Shape.EXEC),
    "one_sync": (1, Shape.ONE),
    "many_sync": (1, Shape.MANY),
    "count_sync": (1, Shape.COUNT),
    "execute_sync": (1, Shape.EXEC),
    "statement": (0, None),
    "one_via_connector": (1, Shape.ONE),
}
