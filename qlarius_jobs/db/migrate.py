"""``qlarius-jobs migrate``: Procrastinate's schema, then the numbered migrations of
``sql/migrations/``, then the operators' views of ``sql/monitoring.sql``.

Each migration runs once, in its own transaction, and is recorded in
``qlarius_schema_migrations``. Procrastinate's schema is applied once on a fresh database and
its version recorded; after a Procrastinate upgrade, the upgrade's own migration files (those
newer than the recorded version) are applied in order. Running ``migrate`` again is a no-op.
A transaction-scoped advisory lock, taken by each step, keeps two concurrent ``migrate`` runs
from interleaving; nothing is kept in the session, so ``migrate`` also works through a
transaction pooler.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, LiteralString, cast

import psycopg
from procrastinate import schema as procrastinate_schema

from qlarius_jobs.db.queries import QueryFile, sql_root
from qlarius_jobs.logs import get_logger

log = get_logger(__name__)

SQL = QueryFile.of(__file__)
_MIGRATE_LOCK_KEY = 7_361_201_001  # arbitrary, constant: one migrate at a time per database
_PROCRASTINATE_MIGRATION = re.compile(r"^(\d+)\.(\d+)\.(\d+)_(\d+)_.*\.sql$")
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: LiteralString


def migrations() -> list[Migration]:
    """The numbered files of ``sql/migrations/``, in order."""
    found: list[Migration] = []
    for path in sorted((sql_root() / "migrations").iterdir()):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            continue
        found.append(
            Migration(int(match[1]), match[2], cast(LiteralString, path.read_text("utf-8")))
        )
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise ValueError(f"duplicate migration numbers in {sql_root() / 'migrations'}")
    return found


def monitoring() -> LiteralString:
    """``sql/monitoring.sql``: the operators' views, re-applied by every ``migrate``."""
    return cast(LiteralString, (sql_root() / "monitoring.sql").read_text(encoding="utf-8"))


@dataclass
class MigrationReport:
    procrastinate: str = "unchanged"
    applied: list[str] = field(default_factory=list)
    elapsed_ms: int = 0


def _version_tuple(version: str) -> tuple[int, int, int]:
    major, minor, patch = [*(int(p) for p in re.findall(r"\d+", version)[:3]), 0, 0, 0][:3]
    return major, minor, patch


def _procrastinate_upgrades(since: str, until: str) -> list[tuple[tuple[int, int, int, int], Path]]:
    """Procrastinate's migration files for versions in (since, until], in order."""
    low, high = _version_tuple(since), _version_tuple(until)
    found = []
    for path in Path(procrastinate_schema.SchemaManager.get_migrations_path()).iterdir():
        match = _PROCRASTINATE_MIGRATION.match(path.name)
        if not match:
            continue
        version = (int(match[1]), int(match[2]), int(match[3]))
        if low < version <= high:
            found.append(((*version, int(match[4])), path))
    return sorted(found)


def _apply_procrastinate(conn: psycopg.Connection, report: MigrationReport) -> None:
    """Procrastinate's schema, or its upgrades, in the caller's (locked) transaction."""
    installed = importlib.metadata.version("procrastinate")
    recorded = SQL.one_sync(conn, "procrastinate_schema_version")
    if recorded is None:
        has_tables = SQL.one_sync(conn, "procrastinate_tables_exist")
        if not (has_tables and has_tables["present"]):
            conn.execute(cast(LiteralString, procrastinate_schema.SchemaManager.get_schema()))
            report.procrastinate = f"installed {installed}"
        else:
            # Applied by hand (procrastinate schema --apply): assume it matches this version.
            report.procrastinate = f"adopted existing schema as {installed}"
        SQL.execute_sync(conn, "record_procrastinate_schema_version", version=installed)
        return
    current = recorded["version"]
    if _version_tuple(current) >= _version_tuple(installed):
        return
    for _, path in _procrastinate_upgrades(current, installed):
        conn.execute(cast(LiteralString, path.read_text("utf-8")))
    SQL.execute_sync(conn, "record_procrastinate_schema_version", version=installed)
    report.procrastinate = f"upgraded {current} -> {installed}"


class SchemaBehind(ValueError):
    """The database's schema is older than this package's; the message says what to run."""


def pending(conninfo: str, timeout_seconds: float | None = None) -> list[str]:
    """What ``migrate`` would apply, read without changing anything (no bookkeeping table:
    everything is pending). ``timeout_seconds`` bounds the connection and each statement."""
    installed = importlib.metadata.version("procrastinate")
    bounds: dict[str, Any] = {}
    if timeout_seconds is not None:
        bounds = {
            "connect_timeout": max(1, int(timeout_seconds)),
            "options": f"-c statement_timeout={int(timeout_seconds * 1000)}",
        }
    with psycopg.connect(conninfo, autocommit=True, **bounds) as conn:
        state = SQL.one_sync(conn, "schema_state")
        assert state is not None
        if not state["bookkept"]:
            return ["procrastinate " + installed] + [
                f"{m.version:04d}_{m.name}" for m in migrations()
            ]
        recorded = SQL.one_sync(conn, "procrastinate_schema_version")
        done = {row["version"] for row in SQL.many_sync(conn, "applied_migrations")}
    behind = []
    if recorded is None or _version_tuple(recorded["version"]) < _version_tuple(installed):
        behind.append("procrastinate " + installed)
    behind += [f"{m.version:04d}_{m.name}" for m in migrations() if m.version not in done]
    return behind


def require_current(conninfo: str) -> None:
    """Raise ``SchemaBehind`` (one line) when ``migrate`` has something to apply."""
    behind = pending(conninfo)
    if behind:
        shown = ", ".join(behind[:3]) + (f" and {len(behind) - 3} more" if len(behind) > 3 else "")
        raise SchemaBehind(
            f"the database schema is behind this version of qlarius-jobs ({len(behind)} "
            f"migration(s) not applied: {shown}); run `qlarius-jobs migrate` first"
        )


@contextlib.contextmanager
def _locked_transaction(conn: psycopg.Connection) -> Iterator[None]:
    """A transaction holding the migrate lock: concurrent runs take turns, step by step. The
    lock is transaction-scoped and notices are quieted with SET LOCAL, so nothing outlives the
    transaction (behind a transaction pooler, the next one may run on another session)."""
    with conn.transaction():
        SQL.execute_sync(conn, "lock_migrations", key=_MIGRATE_LOCK_KEY)
        SQL.execute_sync(conn, "quiet_notices")
        yield


def install_defaults(conn: psycopg.Connection) -> None:
    """The rows of ``qlarius_schedules``, ``qlarius_queue_controls`` and
    ``qlarius_task_controls`` that do not exist yet, from the catalog of jobs and the settings
    (their ``*_CRON`` are defaults: the rows, once there, are the truth). A schedule the
    database refuses raises ``SettingsError`` naming it."""
    # The catalog sits above this module (its jobs use the database layer): read at call time.
    from qlarius_jobs.jobs import catalog
    from qlarius_jobs.settings import SettingsError, get_settings

    settings = get_settings()
    schedules = {
        spec.name: spec.schedule(settings)
        for spec in catalog.specs().values()
        if spec.schedule is not None
    }
    try:
        with conn.transaction():
            SQL.execute_sync(
                conn,
                "install_default_schedules",
                tasks=list(schedules),
                crons=list(schedules.values()),
            )
    except psycopg.errors.CheckViolation as exc:
        raise SettingsError(
            f"invalid setting (a *_CRON default): {exc.diag.message_primary}"
        ) from None
    SQL.execute_sync(
        conn,
        "install_default_queue_controls",
        queues=catalog.queues(),
        tasks=sorted(catalog.specs()),
    )


def migrate(conninfo: str) -> MigrationReport:
    started = time.monotonic()
    report = MigrationReport()
    with psycopg.connect(conninfo, autocommit=True, prepare_threshold=None) as conn:
        with _locked_transaction(conn):
            SQL.execute_sync(conn, "create_bookkeeping")
        with _locked_transaction(conn):
            _apply_procrastinate(conn, report)
        for migration in migrations():
            with _locked_transaction(conn):
                # read under the lock: a concurrent run may have applied it meanwhile
                if SQL.one_sync(conn, "migration_applied", version=migration.version):
                    continue
                conn.execute(migration.sql)
                SQL.execute_sync(
                    conn, "record_migration", version=migration.version, name=migration.name
                )
            report.applied.append(f"{migration.version:04d}_{migration.name}")
        with _locked_transaction(conn):
            conn.execute(monitoring())  # views: re-applied every time
        with _locked_transaction(conn):
            install_defaults(conn)
        # Fresh, unanalysed job tables make the fetch query pick bad plans.
        SQL.execute_sync(conn, "analyze")
    report.elapsed_ms = int((time.monotonic() - started) * 1000)
    log.info(
        "migrations applied",
        procrastinate=report.procrastinate,
        applied=report.applied,
        applied_count=len(report.applied),
        elapsed_ms=report.elapsed_ms,
    )
    return report
