"""The commands about what workers do when: schedules (list, set, pause, resume, run, ticks),
queues and tasks (list, pause, resume; a queue's concurrency). Every worker process follows
a change within seconds (see ``ops/controls.py``)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

import psycopg

from qlarius_jobs.cli.database import current_database
from qlarius_jobs.cli.output import format_table, iso
from qlarius_jobs.ops import controls


def add_schedules(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "schedules",
        help="the periodic jobs' schedules: list, set, pause, resume, run now",
        description="The schedules live in the qlarius_schedules table (times in UTC); every "
        "worker process follows a change within seconds.",
    )
    cmd.set_defaults(handler=cmd_schedules)
    actions = cmd.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="each schedule, its next runs and its last tick")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    set_cmd = actions.add_parser("set", help="change a schedule's cron expression")
    set_cmd.add_argument("task", help="the scheduled task")
    set_cmd.add_argument("cron", help="5 fields (or 6: the seconds last), e.g. '0 * * * *'")
    for action, text in (
        ("pause", "defer no tick until resumed (ticks missed meanwhile are not caught up)"),
        ("resume", "defer its ticks again, from now on"),
        ("run", "defer one job now (none when the previous job is still waiting)"),
    ):
        one = actions.add_parser(action, help=text)
        one.add_argument("task", help="the scheduled task")
    ticks = actions.add_parser("ticks", help="the latest ticks and their jobs")
    ticks.add_argument("task", nargs="?", help="only this schedule's")
    ticks.add_argument("--limit", type=int, default=20, help="how many (1-1000)")
    ticks.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_schedules(args: argparse.Namespace) -> int:
    actor = controls.cli_actor()
    if args.action == "ticks" and not 1 <= args.limit <= 1000:
        raise ValueError("--limit must be 1 to 1000")
    with psycopg.connect(current_database(), autocommit=True) as conn:
        if args.action == "list":
            rows = controls.schedules(conn)
            if args.json:
                return _print_json(rows)
            table = [
                {
                    "task": r["task_name"],
                    "cron": r["cron"],
                    "state": "enabled" if r["enabled"] else "PAUSED",
                    "next runs": ", ".join(_time(t) for t in r["next_runs"]) or "-",
                    "last tick": _time(r["last_deferred_at"]),
                    "job": r["last_job_id"] or "",
                    "job state": r["last_job_status"] or "",
                    "changed by": r["updated_by"],
                }
                for r in rows
            ]
            print(format_table("Schedules (UTC)", table), end="")
            return 0
        if args.action == "ticks":
            rows = controls.ticks(conn, args.task, args.limit)
            if args.json:
                return _print_json(rows)
            table = [
                {
                    "task": r["task_name"],
                    "tick": _time(r["tick_at"]),
                    "how": "run now" if r["run_now"] else "cron",
                    "missed": r["missed"],
                    "job": r["job_id"] or "none (the previous one was waiting)",
                    "job state": r["job_status"] or "",
                }
                for r in rows
            ]
            print(format_table("Ticks, newest first (UTC)", table), end="")
            return 0
        if args.action == "set":
            row = controls.set_schedule(conn, args.task, args.cron, actor)
            print(f"{row['task_name']}: {row['cron']} (from now on; next: {_next(row)})")
        elif args.action in ("pause", "resume"):
            row = controls.set_schedule_enabled(conn, args.task, args.action == "resume", actor)
            print(
                f"{row['task_name']}: paused (no tick is deferred)"
                if not row["enabled"]
                else f"{row['task_name']}: resumed (next: {_next(row)})"
            )
        else:
            row = controls.run_schedule_now(conn, args.task, actor)
            print(
                f"{args.task}: job #{row['job_id']} deferred"
                if row["job_id"]
                else f"{args.task}: no job deferred: its previous job is still waiting "
                "(or this second already has one)"
            )
    return 0


def add_queues(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "queues",
        help="pause or resume a queue (every worker process, within 2 s); its concurrency",
        description="Queue controls live in the qlarius_queue_controls table. A paused queue "
        "starts no new job (running ones finish); a pause survives worker restarts.",
    )
    cmd.set_defaults(handler=cmd_queues)
    actions = cmd.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="each queue: paused or not, waiting, running")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    for action, text in (("pause", "start no new job of the queue"), ("resume", "start again")):
        one = actions.add_parser(action, help=text)
        one.add_argument("queue")
    concurrency = actions.add_parser(
        "concurrency",
        help="at most N jobs of the queue at once per worker process ('default': its own)",
    )
    concurrency.add_argument("queue")
    concurrency.add_argument("n", help="a number from 1, or 'default'")


def cmd_queues(args: argparse.Namespace) -> int:
    actor = controls.cli_actor()
    n: int | None = None
    if args.action == "concurrency" and args.n != "default":
        if not args.n.isdigit():
            raise ValueError(f"concurrency must be a number from 1, or 'default', not {args.n!r}")
        n = int(args.n)
    with psycopg.connect(current_database(), autocommit=True) as conn:
        if args.action == "list":
            rows = controls.queues(conn)
            if args.json:
                return _print_json(rows)
            table = [
                {
                    "queue": r["queue_name"],
                    "state": "PAUSED" if r["paused"] else "running",
                    "concurrency": r["concurrency"] or "workers' own",
                    "waiting": r["waiting"],
                    "running": r["running"],
                    "changed": _time(r["updated_at"]),
                    "by": r["updated_by"],
                }
                for r in rows
            ]
            print(format_table("Queues", table), end="")
            paused = [t["task_name"] for t in controls.tasks(conn) if t["paused"]]
            if paused:
                print(f"  paused tasks: {', '.join(paused)}")
            return 0
        if args.action == "concurrency":
            row = controls.set_queue_concurrency(conn, args.queue, n, actor)
            print(
                f"queue {row['queue_name']}: concurrency "
                f"{row['concurrency'] or 'of each worker process'}"
            )
            return 0
        row = controls.set_queue_paused(conn, args.queue, args.action == "pause", actor)
    print(
        f"queue {row['queue_name']}: paused (running jobs finish; no new one starts)"
        if row["paused"]
        else f"queue {row['queue_name']}: resumed"
    )
    return 0


def add_tasks(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "tasks",
        help="pause or resume every job of one task (the rest of its queue goes on)",
        description="Task controls live in the qlarius_task_controls table.",
    )
    cmd.set_defaults(handler=cmd_tasks)
    actions = cmd.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="each task: paused or not")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    for action in ("pause", "resume"):
        one = actions.add_parser(action, help=f"{action} a task's jobs")
        one.add_argument("task")


def cmd_tasks(args: argparse.Namespace) -> int:
    with psycopg.connect(current_database(), autocommit=True) as conn:
        if args.action == "list":
            rows = controls.tasks(conn)
            if args.json:
                return _print_json(rows)
            table = [
                {
                    "task": r["task_name"],
                    "state": "PAUSED" if r["paused"] else "running",
                    "changed": _time(r["updated_at"]),
                    "by": r["updated_by"],
                }
                for r in rows
            ]
            print(format_table("Tasks", table), end="")
            return 0
        row = controls.set_task_paused(
            conn, args.task, args.action == "pause", controls.cli_actor()
        )
    print(f"task {row['task_name']}: {'paused' if row['paused'] else 'resumed'}")
    return 0


def _time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _next(row: dict[str, Any]) -> str:
    return _time(controls.next_runs(row["cron"], dt.datetime.now(dt.UTC), 1)[0])


def _print_json(rows: list[dict[str, Any]]) -> int:
    print(json.dumps(rows, default=iso, indent=2))
    return 0
