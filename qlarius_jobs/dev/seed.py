"""Data generation: ``qlarius-jobs seed`` and the demo data set of ``make run``.

The generator runs server-side and set-based (``seed.sql``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
import psycopg.sql
import tqdm
from psycopg import conninfo as pg_conninfo

from qlarius_jobs.api import notify_tags_changed, offer_campaign, trigger_population
from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs.catalog import defer_job
from qlarius_jobs.logs import get_logger

log = get_logger(__name__)

SQL = QueryFile.of(__file__)


def recreate_database(conninfo: str) -> None:
    """The database ``conninfo`` names, dropped (its sessions ended) if it exists and created
    empty, through the server's ``postgres`` database."""
    ident = psycopg.sql.Identifier(pg_conninfo.conninfo_to_dict(conninfo)["dbname"])
    admin = pg_conninfo.make_conninfo(conninfo, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        # Composed, not a named query: a database name is an identifier, never a parameter.
        conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(ident))


@dataclass(frozen=True)
class SeedSizes:
    me_files: int = 3000
    parents: int = 30
    targets: int = 4
    campaigns_per_target: int = 1
    populate: bool = True
    null_share: float = 0.02
    ad_event_share: float = 0.2
    seed: float = 0.42

    def __post_init__(self) -> None:
        if self.me_files < 0 or self.parents < 2 or self.targets < 0:
            raise ValueError("me_files >= 0, parents >= 2 and targets >= 0 are required")
        if self.campaigns_per_target < 0:
            raise ValueError("campaigns_per_target must be >= 0")
        for name in ("null_share", "ad_event_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        if not -1 <= self.seed <= 1:
            raise ValueError("seed must be between -1 and 1 (PostgreSQL's setseed)")


class SeedProgress:
    """The generator's steps, as it reports them (a NOTICE per step): a progress bar on a
    terminal, one structured event per step otherwise."""

    PREFIX = "qlarius-seed step "

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.started = time.monotonic()
        self.bar = (
            tqdm.tqdm(total=steps, desc="seed", unit="step", file=sys.stderr, leave=False)
            if sys.stderr.isatty()
            else None
        )

    def __call__(self, notice: psycopg.errors.Diagnostic) -> None:
        text = notice.message_primary or ""
        if not text.startswith(self.PREFIX):
            return
        number, _, phase = text.removeprefix(self.PREFIX).partition(": ")
        if self.bar is not None:
            self.bar.set_postfix_str(phase)
            self.bar.n = int(number) - 1
            self.bar.refresh()
        else:
            log.info(
                "seed progress",
                step=int(number),
                steps=self.steps,
                phase=phase,
                elapsed_ms=int((time.monotonic() - self.started) * 1000),
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def seed(conninfo: str, sizes: SeedSizes) -> dict[str, Any]:
    """Generate a data set in one transaction; return the counts of what was created."""
    started = time.monotonic()
    progress = SeedProgress(steps=7 if sizes.populate else 4)
    with psycopg.connect(conninfo) as conn:
        conn.add_notice_handler(progress)
        superuser = SQL.one_sync(conn, "current_role_is_superuser")
        if superuser and superuser["superuser"]:
            # Bulk load: the generator's rows are valid by construction, so skip the per-row
            # foreign-key triggers (2-3x faster). Needs a superuser; otherwise they run.
            SQL.execute_sync(conn, "bulk_load_mode")
        SQL.execute_sync(conn, "seed_function")
        try:
            row = SQL.one_sync(conn, "seed_run", **asdict(sizes))
        finally:
            progress.close()
        conn.commit()
        conn.autocommit = True
        SQL.execute_sync(conn, "analyze_all")  # fresh tables: plan with real statistics
    assert row is not None
    counts = dict(row["counts"])
    log.info("seeded", elapsed_ms=int((time.monotonic() - started) * 1000), **counts)
    return counts


def database_is_empty(conninfo: str) -> bool:
    with psycopg.connect(conninfo) as conn:
        return SQL.one_sync(conn, "me_file_count")["n"] == 0


async def kick_off_demo(conninfo: str, changed_me_files: int = 25) -> dict[str, int]:
    """What the application would do: re-populate a target, offer every live campaign, change
    some MeFiles' tags, and run the backfill now rather than at the next full hour; and one
    job row written by hand with a bad argument, which fails (something for the console)."""

    deferred = {"populate": 0, "offers": 0, "syncs": 0, "backfill": 0, "bad_by_hand": 0}
    async with await psycopg.AsyncConnection.connect(conninfo) as conn, conn.transaction():
        targets = await SQL.many(conn, "demo_kickoff_targets")
        if targets:
            deferred["populate"] += bool(await trigger_population(conn, targets[-1]["id"]))
        for campaign in await SQL.many(conn, "demo_kickoff_campaigns"):
            deferred["offers"] += bool(await offer_campaign(conn, campaign["id"]))
        for row in await SQL.many(conn, "demo_change_tags", count=changed_me_files):
            deferred["syncs"] += bool(await notify_tags_changed(conn, row["me_file_id"]))
        deferred["backfill"] += bool(await defer_job(conn, "backfill_missing_snapshots"))
        deferred["bad_by_hand"] = bool(await SQL.one(conn, "demo_job_written_by_hand"))
    log.info("demo jobs deferred", **deferred)
    return deferred
