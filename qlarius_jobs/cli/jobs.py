"""The commands about jobs and their results: jobs (list, show, retry, cancel, abort) and
audit (drift between the stored results and a fresh computation)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import psycopg

from qlarius_jobs.cli.database import current_database
from qlarius_jobs.cli.output import format_table, iso
from qlarius_jobs.logs import get_logger
from qlarius_jobs.settings import get_settings

log = get_logger(__name__)


def add_audit(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser(
        "audit",
        help="compare populations, snapshots and offers with a fresh computation (exit 1 on drift)",
    )
    audit.add_argument("--me-file", type=int, action="append", help="only this MeFile (repeatable)")
    audit.add_argument("--repair", action="store_true", help="queue syncs and reconciles for drift")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.set_defaults(handler=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    """Audit every MeFile (or the given ones); exit 1 when drift was found."""
    from qlarius_jobs.jobs import audit

    conninfo = current_database()

    async def go() -> tuple[audit.Audit, dict[str, int]]:
        async with await psycopg.AsyncConnection.connect(conninfo) as conn:
            result = await audit.audit(conn, args.me_file or None)
            repaired = await audit.repair(conn, result) if args.repair and result.total() else {}
            return result, repaired

    result, repaired = asyncio.run(go())
    report = {
        "me_files": "all" if result.audited is None else result.audited,
        "targets": result.targets,
        **result.counts(),
        "stuck_pending": result.stuck,
        **repaired,
        "examples": {k: v[:10] for k, v in result.found.items()},
    }
    for line in result.stuck_lines(get_settings().stuck_pending_seconds):
        log.warning(line, stuck=result.stuck)  # the line operators alert on
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for kind, words in audit.FINDINGS.items():
            print(f"{words}: {len(result.found.get(kind, []))}")
        for kind, stuck in result.stuck.items():
            print(
                f"pending {kind} rows stuck (older than "
                f"{get_settings().stuck_pending_seconds:g} s): {stuck['rows']}"
                + (f", oldest {stuck['oldest_s']:g} s" if stuck["rows"] else "")
            )
        if repaired:
            print(
                f"repair queued: {repaired['syncs_recorded']} syncs, "
                f"{repaired['reconciles_recorded']} reconciles (the workers apply them)"
            )
        elif sum(result.counts().values()):
            print("run again with --repair to hand these to the workers")
    return 1 if result.total() else 0


def add_jobs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    jobs_cmd = sub.add_parser(
        "jobs", help="list, show, retry, cancel or abort jobs", description=cmd_jobs.__doc__
    )
    jobs_cmd.set_defaults(handler=cmd_jobs)
    jobs_sub = jobs_cmd.add_subparsers(dest="action", required=True)
    listing = jobs_sub.add_parser("list", help="jobs, newest first, a page at a time")
    listing.add_argument("--queue", help="only this queue")
    listing.add_argument(
        "--state",
        choices=["todo", "doing", "succeeded", "failed", "cancelled", "aborting", "aborted"],
        help="only jobs in this state",
    )
    listing.add_argument("--task", help="only this task")
    listing.add_argument("--before", type=int, help="the page after this job id (keyset)")
    listing.add_argument("--limit", type=int, default=20, help="jobs per page (1-500)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    for action, text in (
        ("show", "a job: arguments, attempts, error history, events"),
        ("retry", "a failed, cancelled or aborted job waits again for one more attempt"),
        ("cancel", "a waiting job is cancelled"),
        ("abort", "a running job is asked to stop"),
    ):
        one = jobs_sub.add_parser(action, help=text)
        one.add_argument("id", help="the job id")
        if action == "show":
            one.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_jobs(args: argparse.Namespace) -> int:
    """List, show, retry, cancel or abort jobs (what Procrastinate's shell did, checked)."""
    from qlarius_jobs.ops import jobs

    if args.action == "list":
        where = jobs.JobFilter(
            queue=args.queue, state=args.state, task=args.task, before=args.before, limit=args.limit
        )
    else:
        id_ = jobs.job_id(args.id)
    conninfo = current_database()

    async def go() -> Any:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            if args.action == "list":
                return await jobs.list_jobs(conn, where)
            if args.action == "show":
                return await jobs.show_job(conn, id_)
            action = {"retry": jobs.retry_job, "cancel": jobs.cancel_job, "abort": jobs.abort_job}
            await action[args.action](conn, id_)
            return None

    result = asyncio.run(go())
    if args.action == "list":
        if args.json:
            print(json.dumps(result, default=iso, indent=2))
            return 0
        rows = [
            {
                "id": r["id"],
                "queue": r["queue"],
                "task": r["task"],
                "state": r["state"],
                "attempts": r["attempts"],
                "args": jobs.short_json(r["args"]),
                "last event": iso(r["last_event_at"]) if r["last_event_at"] else "",
            }
            for r in result
        ]
        print(format_table("Jobs, newest first", rows), end="")
        if len(result) == where.limit:
            print(f"  next page: --before {result[-1]['id']}")
        return 0
    if args.action == "show":
        if args.json:
            print(json.dumps(result, default=iso, indent=2))
            return 0
        print(f"job #{result['id']}  {result['task']}  queue {result['queue']}  {result['state']}")
        print(
            f"  attempts: {result['attempts']}  lock: {result['lock'] or '-'}  "
            f"queueing lock: {result['queueing_lock'] or '-'}"
        )
        print(f"  arguments: {json.dumps(result['args'], default=str)}")
        print("  events:")
        for event in result["events"]:
            print(f"    {iso(event['at'])}  {event['type']}")
        print("  errors:" if result["errors"] else "  errors: none")
        for error in result["errors"]:
            print(
                f"    attempt {error['attempt']} at {iso(error['at'])}: "
                f"{error['error_type']}: {error['message']}"
            )
        return 0
    done = {"retry": "waits again", "cancel": "is cancelled", "abort": "is asked to stop"}
    print(f"job #{id_} {done[args.action]}")
    return 0
