"""Data generation: ``qlarius-jobs seed`` and the demo data set of ``make run``.

The generator runs server-side and set-based (``seed.sql``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from qlarius_jobs.api import notify_tags_changed, offer_campaign, trigger_population
from qlarius_jobs.app import app
from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs.catalog import defer_job
from qlarius_jobs.logs import get_logger

log = get_logger(__name__)

SQL = QueryFile.beside(__file__)


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


def seed(conninfo: str, sizes: SeedSizes) -> dict[str, Any]:
    """Generate a data set in one transaction; return the counts of what was created."""
    started = time.monotonic()
    with psycopg.connect(conninfo) as conn:
        if SQL.one_sync(conn, "current_role_is_superuser")["superuser"]:
            # Bulk load: the generator's rows are valid by construction, so skip the per-row
            # foreign-key triggers (2-3x faster). Needs a superuser; otherwise they run.
            conn.execute("SET LOCAL session_replication_role = replica")
        SQL.execute_sync(conn, "seed_function")
        row = SQL.one_sync(conn, "seed_run", **asdict(sizes))
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")  # fresh tables: plan with real statistics
    counts = dict(row["counts"])
    log.info("seeded", elapsed_ms=int((time.monotonic() - started) * 1000), **counts)
    return counts


def database_is_empty(conninfo: str) -> bool:
    with psycopg.connect(conninfo) as conn:
        return SQL.one_sync(conn, "me_file_count")["n"] == 0


async def kick_off_demo(changed_me_files: int = 25) -> dict[str, int]:
    """What the application would do: re-populate a target, offer every live campaign, change
    some MeFiles' tags, and run the backfill now rather than at the next full hour."""

    deferred = {"populate": 0, "offers": 0, "syncs": 0, "backfill": 0}
    async with app.open_async(), app.connector.pool.connection() as conn, conn.transaction():
        targets = await SQL.many(conn, "demo_kickoff_targets")
        if targets:
            deferred["populate"] += bool(await trigger_population(conn, targets[-1]["id"]))
        for campaign in await SQL.many(conn, "demo_kickoff_campaigns"):
            deferred["offers"] += bool(await offer_campaign(conn, campaign["id"]))
        for row in await SQL.many(conn, "demo_change_tags", count=changed_me_files):
            deferred["syncs"] += bool(await notify_tags_changed(conn, row["me_file_id"]))
        deferred["backfill"] += bool(await defer_job(conn, "backfill_missing_snapshots"))
    log.info("demo jobs deferred", **deferred)
    return deferred
