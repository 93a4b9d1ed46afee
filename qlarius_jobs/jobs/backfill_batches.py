"""The backfill's batches: one table's NULL snapshots over an id range, batch by batch.

Each batch is its own transaction: find the next ids by keyset over the partial NULL index,
fill them set-based (guarded by IS NULL, SKIP LOCKED: never overwrites, never waits), add
what it really updated to the run's history row (and a chunk's progress) in the same
transaction, so the history is exact whoever dies where. Used by the run itself and by its
chunk jobs (``backfill.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from qlarius_jobs import snapshots
from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs.backfill_phases import Phases
from qlarius_jobs.jobs.run import JobRun
from qlarius_jobs.settings import get_settings

SQL = QueryFile.of(__file__)

WORKER = "BackfillMissingSnapshotsWorker"  # the name operators grep for, from the seed note
TABLES = snapshots.SNAPSHOT_TABLES
Table = snapshots.SnapshotTable


@dataclass
class BackfillProgress:
    updated: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    orphans: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    batches: int = 0
    budget_exhausted: bool = False

    def counters(self) -> dict[str, int]:
        """The columns of backfill_runs this progress adds to."""
        return {
            "updated_populations": self.updated["target_populations"],
            "updated_offers": self.updated["offers"],
            "updated_ad_events": self.updated["ad_events"],
            "orphan_offers": self.orphans["offers"],
            "orphan_ad_events": self.orphans["ad_events"],
            "batches": self.batches,
        }


async def _fill_batch(conn: Any, table: Table, ids: list[int], progress: BackfillProgress) -> int:
    if table == "target_populations":
        updated = len(await snapshots.fill_missing_population_snapshots(conn, ids))
    else:
        result = await snapshots.fill_missing_copied_snapshots(conn, table, ids)
        updated = result.updated
        progress.orphans[table] += len(result.orphans)
        # Populations filled on the way count as population repairs.
        progress.updated["target_populations"] += result.populations_filled
    progress.updated[table] += updated
    return updated


async def fill_table_range(
    run: JobRun,
    table: Table,
    progress: BackfillProgress,
    phases: Phases,
    *,
    first_id: int = 1,
    last_id: int | None = None,
    deadline: float | None = None,
    run_id: int | None = None,
    chunk: bool = False,
) -> None:
    """Fill the NULL snapshots of ``table`` with ids in [first_id, last_id], batch by batch.

    With ``run_id``, each batch adds its counts to that backfill run in its own transaction,
    so the history is exact whoever dies where; a ``chunk`` also records how far it got, and a
    retried chunk resumes there (orphans, which stay NULL, are counted once).
    """
    settings = get_settings()
    after_id = first_id - 1
    # a chunk's place in its run's qlarius_backfill_chunks (first_id None: not a chunk)
    place = {"run_id": run_id, "table_name": table, "first_id": first_id if chunk else None}
    if chunk:
        async with phases.transaction(run) as conn:
            with phases.timing("history"):
                resume = await SQL.one(conn, "chunk_done_through", **place)
        if resume and resume["done_through"] is not None:
            after_id = resume["done_through"]
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            progress.budget_exhausted = True
            run.log.warning(
                f"{WORKER}: time budget of {settings.backfill_time_budget_seconds:g} s spent; "
                "the rest is left to the next run",
                table=table,
                after_id=after_id,
            )
            return
        batch_started = time.monotonic()
        batch = BackfillProgress()
        async with phases.transaction(run) as conn:
            with phases.timing("find"):
                ids = [
                    r["id"]
                    for r in await SQL.many(
                        conn,
                        "next_missing_snapshot_ids",
                        tables={"table": table},
                        after_id=after_id,
                        last_id=last_id,
                        batch_size=settings.backfill_batch_size,
                    )
                ]
            if not ids:
                return
            with phases.timing("fill"):
                updated = await _fill_batch(conn, table, ids, batch)
            batch.batches = 1
            if run_id is not None:
                with phases.timing("history"):
                    await SQL.execute(
                        conn,
                        "add_backfill_run_counts",
                        **place,
                        done_through=ids[-1],
                        **batch.counters(),
                    )
        for name in TABLES:
            progress.updated[name] += batch.updated[name]
            progress.orphans[name] += batch.orphans[name]
        progress.batches += 1
        after_id = ids[-1]
        run.log.info(
            f"{WORKER}: batch of {table} done",
            table=table,
            batch=progress.batches,
            rows=len(ids),
            updated=updated,
            elapsed_ms=int((time.monotonic() - batch_started) * 1000),
        )
