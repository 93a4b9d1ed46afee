"""The drift audit: what differs from a fresh computation, and its repair.

Whatever the jobs guarantee, an operator wants to know that populations, snapshots and offers
still agree with the rules (a bug, a hand edit, a restore from backup). The audit compares a
set of MeFiles (a sample, or all) with a fresh computation in one snapshot, leaving out what
is in flight (pending syncs or reconciles, a populate or an offers job running). A repair
records pending work for what it found: the drains then fix it exactly as they apply any
change, so the audit itself never writes a population or an offer.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from psycopg import AsyncConnection

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs import drains
from qlarius_jobs.settings import get_settings

SQL = QueryFile.of(__file__)

FINDINGS = {
    # kind: the words operators alert on
    "drifted_population": "population drift",
    "stale_snapshot": "stale snapshot",
    "offer_without_eligibility": "offer without eligibility",
    "eligible_without_offer": "eligible MeFile without offer",
    "stale_offer_snapshot": "stale offer snapshot",
    "stale_offer_amount": "offer without its bid's amounts",
    "offer_of_a_campaign_not_live": "offer of a campaign not live",
}
# what repairs each kind: a sync of the MeFile, or a reconcile of its offers
SYNC_KINDS = {"drifted_population", "stale_snapshot"}


@dataclass
class Audit:
    audited: int | None  # MeFiles in the sample (None: all)
    targets: list[int]
    found: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # (me_file, about)
    # pending work of each kind that drains could take but have not for too long
    stuck: dict[str, dict[str, float]] = field(default_factory=dict)  # kind -> rows, oldest_s

    def counts(self) -> dict[str, int]:
        return {kind: len(self.found.get(kind, [])) for kind in FINDINGS}

    def stuck_rows(self) -> int:
        return int(sum(s["rows"] for s in self.stuck.values()))

    def total(self) -> int:
        """Drift found, plus stuck pending rows: either way the data is not what the rules
        say, or will not be."""
        return sum(self.counts().values()) + self.stuck_rows()

    def stuck_lines(self, threshold_seconds: float) -> list[str]:
        """The warning operators alert on, one line per kind with stuck work."""
        return [
            f"pending work stuck: {int(s['rows'])} {kind} rows older than "
            f"{threshold_seconds:g} s (oldest {s['oldest_s']:g} s); are the drains running?"
            for kind, s in self.stuck.items()
            if s["rows"]
        ]

    def me_files(self, kinds: set[str]) -> list[int]:
        return sorted({m for kind in kinds for m, _ in self.found.get(kind, [])})


async def sample(conn: AsyncConnection, size: int) -> list[int]:
    rows = await SQL.many(conn, "audit_sample", size=size)
    return [r["id"] for r in rows]


async def audit(
    conn: AsyncConnection,
    me_file_ids: list[int] | None = None,
    *,
    stuck_after_seconds: float | None = None,
) -> Audit:
    """Audit ``me_file_ids`` (None: every MeFile) in the targets no job holds right now, and
    look for pending work older than ``stuck_after_seconds`` (default: the setting) that the
    drains could take: MeFiles with pending work are in flight, not drifted, so pending work
    that never drains would otherwise hide its drift."""
    if stuck_after_seconds is None:
        stuck_after_seconds = get_settings().stuck_pending_seconds
    async with conn.transaction():
        targets = [r["target_id"] for r in await SQL.many(conn, "audit_free_targets")]
        rows = await SQL.many(conn, "audit_drift", me_file_ids=me_file_ids, target_ids=targets)
    async with conn.transaction():
        stuck = {
            r["kind"]: {"rows": int(r["rows"]), "oldest_s": float(r["oldest_s"])}
            for r in await SQL.many(conn, "stuck_pending", older_than_seconds=stuck_after_seconds)
        }
    found: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for row in rows:
        found[row["kind"]].append((row["me_file_id"], row["about"]))
    return Audit(
        audited=None if me_file_ids is None else len(me_file_ids),
        targets=targets,
        found=found,
        stuck=stuck,
    )


async def repair(conn: AsyncConnection, result: Audit) -> dict[str, int]:
    """Record pending syncs and reconciles for what the audit found (the drains repair)."""
    syncs = result.me_files(SYNC_KINDS)
    reconciles = result.me_files(set(FINDINGS) - SYNC_KINDS)
    async with conn.transaction():
        for kind, ids in ((drains.SYNC, syncs), (drains.RECONCILE, reconciles)):
            if ids:
                await drains.record_pending_many(conn, kind, ids)
    return {"syncs_recorded": len(syncs), "reconciles_recorded": len(reconciles)}
