"""``qlarius-jobs migrate``: Procrastinate's schema, then the numbered migrations of ``sql/``.

Each migration runs once, in its own transaction, and is recorded in
``qlarius_schema_migrations``. Procrastinate's schema is applied once on a fresh database and
its version recorded; after a Procrastinate upgrade, the upgrade's own migration files (those
newer than the recorded version) are applied in order. Running ``migrate`` again is a no-op.
An advisory lock keeps two concurrent ``migrate`` runs from interleaving.
"""

from __future__ import annotations

import importlib.metadata
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import LiteralString, cast

import psycopg
from procrastinate import schema as procrastinate_schema

from qlarius_jobs import sql_files
from qlarius_jobs.logs import get_logger

log = get_logger(__name__)

_MIGRATE_LOCK_KEY = 7_361_201_001  # arbitrary, constant: one migrate at a time per database
_PROCRASTINATE_MIGRATION = re.compile(r"^(\d+)\.(\d+)\.(\d+)_(\d+)_.*\.sql$")

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS qlarius_schema_migrations (
    version int PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS qlarius_procrastinate_schema (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


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
    installed = importlib.metadata.version("procrastinate")
    recorded = conn.execute("SELECT version FROM qlarius_procrastinate_schema").fetchone()
    has_tables = conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone()
    if recorded is None:
        with conn.transaction():
            if not (has_tables and has_tables[0]):
                conn.execute(cast(LiteralString, procrastinate_schema.SchemaManager.get_schema()))
                report.procrastinate = f"installed {installed}"
            else:
                # Applied by hand (procrastinate schema --apply): assume it matches this version.
                report.procrastinate = f"adopted existing schema as {installed}"
            conn.execute(
                "INSERT INTO qlarius_procrastinate_schema (version) VALUES (%s)", (installed,)
            )
        return
    current = recorded[0]
    if _version_tuple(current) >= _version_tuple(installed):
        return
    with conn.transaction():
        for _, path in _procrastinate_upgrades(current, installed):
            conn.execute(cast(LiteralString, path.read_text("utf-8")))
        conn.execute(
            "UPDATE qlarius_procrastinate_schema SET version = %s, applied_at = now()",
            (installed,),
        )
    report.procrastinate = f"upgraded {current} -> {installed}"


def migrate(conninfo: str) -> MigrationReport:
    started = time.monotonic()
    report = MigrationReport()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATE_LOCK_KEY,))
        try:
            conn.execute("SET client_min_messages = warning")
            conn.execute(_BOOKKEEPING)
            _apply_procrastinate(conn, report)
            done = {row[0] for row in conn.execute("SELECT version FROM qlarius_schema_migrations")}
            for migration in sql_files.migrations():
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute(
                        "INSERT INTO qlarius_schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                report.applied.append(f"{migration.version:04d}_{migration.name}")
            with conn.transaction():
                conn.execute(sql_files.monitoring())  # views: re-applied every time
            # Fresh, unanalysed job tables make the fetch query pick bad plans.
            conn.execute("ANALYZE")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATE_LOCK_KEY,))
    report.elapsed_ms = int((time.monotonic() - started) * 1000)
    log.info(
        "migrations applied",
        procrastinate=report.procrastinate,
        applied=report.applied,
        applied_count=len(report.applied),
        elapsed_ms=report.elapsed_ms,
    )
    return report
