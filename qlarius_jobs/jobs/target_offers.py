"""A populate settles its own target's offers: one set-based pass right after its populations
commit, instead of a reconcile per MeFile whose population changed.

Every population change records a pending reconcile naming the band's target (migration
0022). Right after the populate commits, in a transaction of its own, the pass takes the
target's offers scope (as ``create_initial_pending_offers`` does: reconcile batches leave the
target's campaigns alone meanwhile), deletes the rows naming the target, then reconciles every
offer of the target's campaigns with ``offers.reconcile_offers`` (the same statements as every
reconcile, hence one definition of eligibility): delete the ineligible, then create the
missing, then refresh. What was recorded before the delete is applied by the pass; a change
committed after it leaves its row for the drain, as does everything when the pass cannot run
(the worker died after the populate committed, a campaign of the target is being deleted):
nothing depends on the job remembering.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from psycopg import AsyncConnection

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs import drains
from qlarius_jobs.jobs.offers import reconcile_later, reconcile_offers

SQL = QueryFile.of(__file__)


@dataclass(frozen=True)
class TargetOffers:
    """What the pass did: ``state`` is ``"settled"``, ``"nothing pending"``, or why the
    target's rows were left to the reconcile drain (``"busy"``, ``"gone"``)."""

    state: str
    rows_taken: int = 0
    deleted: int = 0
    created: int = 0
    refreshed: int = 0
    left_for_later: int = 0
    elapsed_ms: int = 0

    def summary(self) -> dict[str, int | str]:
        return {
            "offers": self.state,
            "offer_rows_taken": self.rows_taken,
            "offers_deleted": self.deleted,
            "offers_created": self.created,
            "offers_refreshed": self.refreshed,
            "offers_left_for_later": self.left_for_later,
            "offers_ms": self.elapsed_ms,
        }


async def settle_target_offers(conn: AsyncConnection, target_id: int) -> TargetOffers:
    """In the caller's open transaction: take the target's offers scope, its pending
    reconciles, and reconcile all of its campaigns' offers. MeFiles whose offers are held
    elsewhere right now go back to the drain, due in 2 s."""
    started = time.monotonic()
    async with drains.scope_locked(conn, drains.RECONCILE, target_id) as state:
        if state != "locked":
            # its rows stay pending: the drain applies them once the target is free
            return TargetOffers(state=state)
        taken = await SQL.count(conn, "take_pending_reconciles_of_target", target_id=target_id)
        if not taken:
            return TargetOffers(state="nothing pending")
        changes = await reconcile_offers(conn, free_targets=[target_id])
        await reconcile_later(conn, changes.blocked)
        # reconcile batches left this target's part of their MeFiles for now: wake them
        await drains.wake_drains(conn, drains.RECONCILE)
    return TargetOffers(
        state="settled",
        rows_taken=taken,
        deleted=changes.deleted,
        created=changes.created,
        refreshed=changes.refreshed,
        left_for_later=len(changes.blocked),
        elapsed_ms=int((time.monotonic() - started) * 1000),
    )
