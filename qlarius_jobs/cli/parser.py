"""``build_parser``: the top-level options, then each command's subparser, which its own
module adds (beside its handler, so a command's options and their use are read together)."""

from __future__ import annotations

import argparse

from qlarius_jobs.cli import controls, database, jobs, tools, workers

# In the order `qlarius-jobs --help` lists them.
COMMANDS = (
    database.add_migrate,
    database.add_status,
    database.add_db,
    workers.add_run,
    workers.add_worker,
    workers.add_web,
    tools.add_bench,
    tools.add_bench_scale,
    tools.add_bench_jobs,
    jobs.add_audit,
    jobs.add_jobs,
    controls.add_schedules,
    controls.add_queues,
    controls.add_tasks,
    tools.add_faults,
    tools.add_storm,
    tools.add_seed,
)


def build_parser() -> argparse.ArgumentParser:
    """The parser; each command sets ``handler``, the function that runs it."""
    parser = argparse.ArgumentParser(
        prog="qlarius-jobs",
        description="Run and operate the audience jobs: workers, migrations, status, jobs.",
        epilog="Settings come from QLARIUS_* environment variables (see the README).",
    )
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=None,
        help="log lines as JSON or for people (default: QLARIUS_LOG_FORMAT; auto: console on "
        "a terminal)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser
