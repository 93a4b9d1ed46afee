"""The project's SQL: numbered migrations and named queries, kept as ``.sql`` files.

In a source checkout they are read from ``sql/`` at the top level; an installed wheel carries
the same folder inside the package (see ``pyproject.toml``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString, cast

from psycopg import AsyncConnection, Connection, sql
from psycopg.rows import dict_row

_PACKAGE_DIR = Path(__file__).resolve().parent
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def sql_dir() -> Path:
    for candidate in (_PACKAGE_DIR / "sql", _PACKAGE_DIR.parent / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError("the sql/ folder of qlarius_jobs is missing from this install")


@functools.cache
def query(name: str) -> LiteralString:
    """The text of ``sql/queries/<name>.sql``."""
    path = sql_dir() / "queries" / f"{name}.sql"
    # Our own files: as trusted as code, hence LiteralString.
    return cast(LiteralString, path.read_text(encoding="utf-8"))


def monitoring() -> LiteralString:
    """``sql/monitoring.sql``: the operators' views, re-applied by every ``migrate``."""
    return cast(LiteralString, (sql_dir() / "monitoring.sql").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: LiteralString


def migrations() -> list[Migration]:
    found: list[Migration] = []
    for path in sorted((sql_dir() / "migrations").iterdir()):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            continue
        found.append(
            Migration(int(match[1]), match[2], cast(LiteralString, path.read_text("utf-8")))
        )
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise ValueError(f"duplicate migration numbers in {sql_dir() / 'migrations'}")
    return found


Statement = LiteralString | sql.Composed


def statement(name: str, tables: dict[str, str] | None = None) -> Statement:
    """A named query; ``tables`` fills its ``{placeholders}`` with quoted table names."""
    text = query(name)
    if not tables:
        return text
    return sql.SQL(text).format(**{k: sql.Identifier(v) for k, v in tables.items()})


# Named queries run unprepared: their optional filters (``%(ids)s IS NULL OR ...``) then fold
# away at planning time, so each call gets the plan for its own scope.
async def fetch_all(
    conn: AsyncConnection, name: str, *, tables: dict[str, str] | None = None, **params: Any
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(statement(name, tables), params, prepare=False)
        return await cur.fetchall() if cur.description else []


async def fetch_one(
    conn: AsyncConnection, name: str, *, tables: dict[str, str] | None = None, **params: Any
) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(statement(name, tables), params, prepare=False)
        return await cur.fetchone() if cur.description else None


async def execute(
    conn: AsyncConnection, name: str, *, tables: dict[str, str] | None = None, **params: Any
) -> int:
    """Run a named statement; return its row count."""
    async with conn.cursor() as cur:
        await cur.execute(statement(name, tables), params, prepare=False)
        return cur.rowcount


def fetch_all_sync(conn: Connection, name: str, **params: Any) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query(name), params, prepare=False)
        return cur.fetchall() if cur.description else []
