"""The hourly safety net of the seed note: find NULL snapshots and fill them.

With snapshots written inline by populate and sync, a run should find 0-10 rows. Each run
walks the partial NULL indexes of populations, offers and ad events by keyset, in batches that
are each their own transaction (compute set-based, update guarded by IS NULL, count the rows
really updated), stops cleanly when its time budget is spent, and records itself in
``backfill_runs``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from qlarius_jobs import snapshot, sql_files
from qlarius_jobs.jobs import JobRun, NoArgs, job_task
from qlarius_jobs.settings import get_settings

WORKER = "BackfillMissingSnapshotsWorker"  # the name operators grep for, from the seed note
TABLES = ("target_populations", "offers", "ad_events")


@dataclass
class BackfillProgress:
    found: dict[str, int]
    updated: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    orphans: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    batches: int = 0
    budget_exhausted: bool = False


async def _fill_batch(conn: Any, table: str, ids: list[int], progress: BackfillProgress) -> int:
    if table == "target_populations":
        updated = await snapshot.fill_missing_population_snapshots(conn, ids)
    else:
        result = await snapshot.fill_missing_copied_snapshots(conn, table, ids)  # type: ignore[arg-type]
        updated = result.updated
        progress.orphans[table] += len(result.orphans)
        # Populations filled on the way count as population repairs.
        progress.updated["target_populations"] += result.populations_filled
    progress.updated[table] += updated
    return updated


@job_task(
    name="backfill_missing_snapshots",
    queue="maintenance",
    args_model=NoArgs,
    periodic_cron=get_settings().backfill_cron,
    # above the default 600 s budget, so the budget ends a run cleanly before the limit does
    timeout_seconds=900,
)
async def backfill_missing_snapshots(run: JobRun, args: NoArgs) -> dict[str, Any]:
    settings = get_settings()
    started = time.monotonic()
    deadline = started + settings.backfill_time_budget_seconds
    async with run.transaction() as conn:
        counts = await sql_files.fetch_one(conn, "null_snapshot_counts")
        assert counts is not None
        progress = BackfillProgress(found={t: int(counts[t]) for t in TABLES})
        run_row = await sql_files.fetch_one(
            conn,
            "start_backfill_run",
            job_id=run.job_id,
            found_populations=progress.found["target_populations"],
            found_offers=progress.found["offers"],
            found_ad_events=progress.found["ad_events"],
        )
    assert run_row is not None
    if not any(progress.found.values()):
        run.log.info(f"{WORKER}: No missing snapshots found")
    else:
        run.log.info(
            f"{WORKER}: Found {progress.found['target_populations']} populations with missing "
            "snapshots",
            found_populations=progress.found["target_populations"],
            found_offers=progress.found["offers"],
            found_ad_events=progress.found["ad_events"],
        )
        for table in TABLES:
            if progress.budget_exhausted or not progress.found[table]:
                continue
            after_id = 0
            while True:
                if time.monotonic() >= deadline:
                    progress.budget_exhausted = True
                    run.log.warning(
                        f"{WORKER}: time budget of {settings.backfill_time_budget_seconds:g} s "
                        "spent; the rest is left to the next run",
                        table=table,
                        after_id=after_id,
                    )
                    break
                batch_started = time.monotonic()
                async with run.transaction() as conn:
                    ids = [
                        r["id"]
                        for r in await sql_files.fetch_all(
                            conn,
                            "next_missing_snapshot_ids",
                            tables={"table": table},
                            after_id=after_id,
                            batch_size=settings.backfill_batch_size,
                        )
                    ]
                    if not ids:
                        break
                    updated = await _fill_batch(conn, table, ids, progress)
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
    elapsed_ms = int((time.monotonic() - started) * 1000)
    orphan_total = progress.orphans["offers"] + progress.orphans["ad_events"]
    if orphan_total:
        run.log.warning(
            f"{WORKER}: {orphan_total} offers/ad_events have no population to take a snapshot from",
            orphan_offers=progress.orphans["offers"],
            orphan_ad_events=progress.orphans["ad_events"],
        )
    async with run.transaction() as conn:
        await sql_files.execute(
            conn,
            "finish_backfill_run",
            run_id=run_row["id"],
            updated_populations=progress.updated["target_populations"],
            updated_offers=progress.updated["offers"],
            updated_ad_events=progress.updated["ad_events"],
            orphan_offers=progress.orphans["offers"],
            orphan_ad_events=progress.orphans["ad_events"],
            batches=progress.batches,
            budget_exhausted=progress.budget_exhausted,
            elapsed_ms=elapsed_ms,
        )
    return {
        "backfill_run_id": run_row["id"],
        "found_populations": progress.found["target_populations"],
        "found_offers": progress.found["offers"],
        "found_ad_events": progress.found["ad_events"],
        "updated_populations": progress.updated["target_populations"],
        "updated_offers": progress.updated["offers"],
        "updated_ad_events": progress.updated["ad_events"],
        "orphan_offers": progress.orphans["offers"],
        "orphan_ad_events": progress.orphans["ad_events"],
        "batches": progress.batches,
        "budget_exhausted": progress.budget_exhausted,
    }
