"""The hourly safety net of the seed note: find NULL snapshots and fill them.

With snapshots written inline by populate and sync, a run should find 0-10 rows. Each run
walks the partial NULL indexes of populations, offers and ad events by keyset, in batches that
are each their own transaction (compute set-based, update guarded by IS NULL, count the rows
really updated), stops cleanly when its time budget is spent, and records itself in
``backfill_runs``. A table with more NULL rows than one chunk is shared out instead: the run
defers ``backfill_snapshot_chunk`` jobs over id ranges, which every maintenance worker, on
every machine, takes from the queue; each adds what it updated to the run's history row.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from psycopg.types.json import Jsonb

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs import audit
from qlarius_jobs.jobs.arguments import JobArgs, NoArgs, RowId
from qlarius_jobs.jobs.backfill_batches import (
    TABLES,
    WORKER,
    BackfillProgress,
    Table,
    fill_table_range,
)
from qlarius_jobs.jobs.backfill_phases import Phases, log_fields
from qlarius_jobs.jobs.blueprint import JobBlueprint
from qlarius_jobs.jobs.run import JobRun
from qlarius_jobs.settings import get_settings

SQL = QueryFile.of(__file__)
blueprint = JobBlueprint()


async def _share_out(run: JobRun, table: Table, run_id: int, phases: Phases) -> int:
    """Defer chunk jobs covering ``table``'s NULL rows; return how many."""
    settings = get_settings()
    async with phases.transaction(run) as conn:
        with phases.timing("share"):
            bounds = await SQL.many(
                conn,
                "backfill_chunk_bounds",
                tables={"table": table},
                chunk_size=settings.backfill_chunk_size,
            )
            await backfill_snapshot_chunk.defer_many(
                conn,
                [
                    {
                        "run_id": run_id,
                        "table": table,
                        "first_id": b["first_id"],
                        "last_id": b["last_id"],
                    }
                    for b in bounds
                ],
            )
            await SQL.execute(
                conn,
                "register_backfill_chunks",
                run_id=run_id,
                table_name=table,
                first_ids=[b["first_id"] for b in bounds],
            )
    run.log.info(
        f"{WORKER}: shared out {len(bounds)} chunk jobs for {table}",
        table=table,
        chunks=len(bounds),
        rows=sum(b["rows"] for b in bounds),
    )
    return len(bounds)


async def _audit_a_sample(run: JobRun) -> dict[str, int]:
    """The safety net also catches drift: a sample of MeFiles against a fresh computation;
    what differs is handed to the drains (see ``audit.py``) and logged for alerting."""
    size = get_settings().audit_sample_size
    if not size:
        return {"audited_me_files": 0, **dict.fromkeys(audit.FINDINGS, 0)}
    async with run.connection() as conn:
        result = await audit.audit(conn, await audit.sample(conn, size))
        if result.total():
            await audit.repair(conn, result)
    for kind, words in audit.FINDINGS.items():
        found = result.found.get(kind, [])
        if found:
            run.log.warning(
                f"{WORKER}: {words}: {len(found)} found in a sample of {result.audited} "
                "MeFiles; repair queued",
                finding=kind,
                count=len(found),
                me_file_ids=sorted({m for m, _ in found})[:20],
            )
    for line in result.stuck_lines(get_settings().stuck_pending_seconds):
        run.log.warning(f"{WORKER}: {line}", stuck=result.stuck)
    return {"audited_me_files": result.audited or 0, **result.counts()}


async def _timed_audit(run: JobRun, phases: Phases) -> dict[str, int]:
    with phases.timing("audit"):
        return await _audit_a_sample(run)


async def _fill_or_share(
    run: JobRun,
    found: dict[str, int],
    chunked: set[str],
    run_id: int,
    phases: Phases,
    deadline: float,
) -> tuple[BackfillProgress, int]:
    """The run's own part: each table's NULL rows filled, or shared out as chunk jobs."""
    settings = get_settings()
    progress = BackfillProgress()
    chunks = 0
    if not any(found.values()):
        run.log.info(f"{WORKER}: No missing snapshots found")
    else:
        run.log.info(
            f"{WORKER}: Found {found['target_populations']} populations with missing snapshots",
            found_populations=found["target_populations"],
            found_offers=found["offers"],
            found_ad_events=found["ad_events"],
        )
        for table in TABLES:
            if progress.budget_exhausted or not found[table]:
                continue
            if table in chunked:
                run.log.info(
                    f"{WORKER}: chunk jobs for {table} are still queued or running; leaving "
                    "its rows to them",
                    table=table,
                )
            elif found[table] > settings.backfill_chunk_size:
                chunks += await _share_out(run, table, run_id, phases)
            else:
                await fill_table_range(
                    run, table, progress, phases, deadline=deadline, run_id=run_id
                )
    return progress, chunks


@blueprint.job(
    name="backfill_missing_snapshots",
    queue="maintenance",
    args_model=NoArgs,
    schedule=lambda settings: settings.backfill_cron,
    # above the default 600 s budget, so the budget ends a run cleanly before the limit does
    time_limit_seconds=900,
)
async def backfill_missing_snapshots(run: JobRun, args: NoArgs) -> dict[str, Any]:
    settings = get_settings()
    started = time.monotonic()
    deadline = started + settings.backfill_time_budget_seconds
    phases = Phases()
    async with phases.transaction(run) as conn:
        with phases.timing("find"):
            counts = await SQL.one(conn, "null_snapshot_counts")
            assert counts is not None
            found = {t: int(counts[t]) for t in TABLES}
            chunked = {r["table_name"] for r in await SQL.many(conn, "pending_backfill_chunks")}
        with phases.timing("history"):
            run_row = await SQL.one(
                conn,
                "start_backfill_run",
                job_id=run.job_id,
                found_populations=found["target_populations"],
                found_offers=found["offers"],
                found_ad_events=found["ad_events"],
            )
    assert run_row is not None
    # The drift audit reads on a connection of its own, beside the fills (it writes nothing
    # they read: pending work for the drains); its time overlaps theirs instead of adding to it.
    audit_task = asyncio.create_task(_timed_audit(run, phases))
    try:
        progress, chunks = await _fill_or_share(
            run, found, chunked, run_row["id"], phases, deadline
        )
    except BaseException:
        audit_task.cancel()
        with contextlib.suppress(BaseException):
            await audit_task
        raise
    drift = await audit_task
    orphan_total = progress.orphans["offers"] + progress.orphans["ad_events"]
    if orphan_total:
        run.log.warning(
            f"{WORKER}: {orphan_total} offers/ad_events have no population to take a snapshot from",
            orphan_offers=progress.orphans["offers"],
            orphan_ad_events=progress.orphans["ad_events"],
        )
    async with run.transaction() as conn:
        ended = await SQL.one(
            conn,
            "finish_backfill_run",
            run_id=run_row["id"],
            budget_exhausted=progress.budget_exhausted,
            phase_ms=Jsonb(phases.rounded()),
            **drift,
        )
    if ended and ended["run_finished"]:
        await _log_run_finished(run, run_row["id"])
    elif chunks:
        run.log.info(
            f"{WORKER}: run {run_row['id']} continues in its chunk jobs; it is finished "
            "(and logged) when the last of them is",
            backfill_run_id=run_row["id"],
            chunks_deferred=chunks,
        )
    return {
        "backfill_run_id": run_row["id"],
        **{k: v for k, v in drift.items() if v},
        "found_populations": found["target_populations"],
        "found_offers": found["offers"],
        "found_ad_events": found["ad_events"],
        **progress.counters(),
        "chunks_deferred": chunks,
        "budget_exhausted": progress.budget_exhausted,
    }


class ChunkArgs(JobArgs):
    run_id: RowId
    table: Table
    first_id: RowId
    last_id: RowId


@blueprint.job(
    name="backfill_snapshot_chunk",
    queue="maintenance",
    args_model=ChunkArgs,
    time_limit_seconds=900,
)
async def backfill_snapshot_chunk(run: JobRun, args: ChunkArgs) -> dict[str, Any]:
    """One id range of a large backlog; any maintenance worker may take it."""
    progress = BackfillProgress()
    phases = Phases()
    await fill_table_range(
        run,
        args.table,
        progress,
        phases,
        first_id=args.first_id,
        last_id=args.last_id,
        run_id=args.run_id,
        chunk=True,
    )
    async with run.transaction() as conn:
        await SQL.execute(
            conn, "add_backfill_phases", run_id=args.run_id, phase_ms=Jsonb(phases.rounded())
        )
        ended = await SQL.one(
            conn,
            "chunk_ended",
            run_id=args.run_id,
            table_name=args.table,
            first_id=args.first_id,
        )
    if ended and ended["run_finished"]:
        await _log_run_finished(run, args.run_id)
    return {
        "table": args.table,
        "first_id": args.first_id,
        "last_id": args.last_id,
        **progress.counters(),
    }


async def _log_run_finished(run: JobRun, run_id: int) -> None:
    """The one line of a run's end, with what the whole run (its chunks too) really did."""
    async with run.transaction() as conn:
        totals = await SQL.one(conn, "backfill_run_totals", run_id=run_id)
    assert totals is not None
    counts = {k: v for k, v in totals.items() if k not in ("id", "phase_ms")}
    run.log.info(
        f"{WORKER}: run {run_id} finished",
        backfill_run_id=run_id,
        **counts,
        **log_fields(totals["phase_ms"]),
    )
