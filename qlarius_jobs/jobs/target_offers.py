"""A populate's offers: one set-based pass over its target's offers, by the job
``settle_target_offers`` (queue ``offers``) that the populate defers with its populations'
commit, instead of a reconcile per MeFile whose population changed.

It is a job of its own, not the populate's last step, so that a populate gives its ``targets``
slot (where the syncs run) back as soon as its populations commit, and a failure of the pass
is retried alone, without populating again.

Every population change records a pending reconcile naming the band's target (migration
0022). The job, in a transaction of its own, takes the
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
from qlarius_jobs.jobs.arguments import TargetArgs
from qlarius_jobs.jobs.blueprint import JobBlueprint
from qlarius_jobs.jobs.offers import reconcile_later, reconcile_offers
from qlarius_jobs.jobs.run import JobRun

SQL = QueryFile.of(__file__)
blueprint = JobBlueprint()


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


@blueprint.job(
    name="settle_target_offers",
    queue="offers",
    args_model=TargetArgs,
    attempts=5,
    time_limit_seconds=1800,
)
async def settle_target_offers(run: JobRun, args: TargetArgs) -> dict[str, int | str]:
    """Reconcile every offer of the target's campaigns, in one pass, after its populate.

    Deferred by the populate in the transaction that commits its populations (at most one
    waiting per target: its queueing lock; a second one running waits for the first's
    scope). What it cannot take (rows committed after it took them, a target whose campaign
    is being deleted) stays pending for the reconcile drain."""
    async with run.transaction() as conn:
        offers = await settle_pass(conn, args.target_id)
    return {"target_id": args.target_id, **offers.summary()}


async def settle_pass(conn: AsyncConnection, target_id: int) -> TargetOffers:
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
