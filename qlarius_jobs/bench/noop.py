"""The runner benchmark's two worker processes, each with a no-op job on a queue of its own.

Ours: ``python -m qlarius_jobs.bench.noop --queues bench=10`` is ``qlarius-jobs worker
--queues bench=10`` (the same parser, logging, checks and ``cmd_worker``), with the no-op job
``bench_noop`` added to the catalog's jobs. Bare: Procrastinate's own command line,
``procrastinate --app=qlarius_jobs.bench.noop.bare_app worker --queues bench_bare
--concurrency 10``, on an app with nothing but the no-op task ``bench_noop_bare``, on the
database ``QLARIUS_DATABASE_URL`` names, its pool as large as ours.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from typing import Any

from procrastinate import App, PsycopgConnector

from qlarius_jobs.jobs.arguments import JobArgs
from qlarius_jobs.jobs.blueprint import JobBlueprint
from qlarius_jobs.jobs.run import JobRun
from qlarius_jobs.settings import get_settings

OURS_QUEUE, OURS_TASK = "bench", "bench_noop"
BARE_QUEUE, BARE_TASK = "bench_bare", "bench_noop_bare"

blueprint = JobBlueprint()


class NoopArgs(JobArgs):
    n: int


@blueprint.job(name=OURS_TASK, queue=OURS_QUEUE, args_model=NoopArgs, time_limit_seconds=60)
async def bench_noop(run: JobRun, args: NoopArgs) -> dict[str, Any]:
    return {"n": args.n}


@functools.cache
def _bare_app() -> App:
    settings = get_settings()
    bare = App(
        connector=PsycopgConnector(
            conninfo=settings.database_url or "",
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
        )
    )

    @bare.task(name=BARE_TASK, queue=BARE_QUEUE)
    async def bench_noop_bare(n: int) -> None:
        return None

    return bare


def __getattr__(name: str) -> Any:
    # `procrastinate --app=qlarius_jobs.bench.noop.bare_app` reads this attribute
    if name == "bare_app":
        return _bare_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: Sequence[str]) -> int:
    """``qlarius-jobs worker <argv>``, with the no-op job among the jobs it knows."""
    from qlarius_jobs.cli import workers
    from qlarius_jobs.cli.parser import build_parser
    from qlarius_jobs.jobs import catalog
    from qlarius_jobs.logs import configure_logging

    args = build_parser().parse_args(["worker", *argv])
    configure_logging(fmt=args.log_format)
    return workers.cmd_worker(args, (*catalog.BLUEPRINTS, blueprint))


if __name__ == "__main__":
    os.environ.setdefault("QLARIUS_LOG_FORMAT", "json")
    sys.exit(main(sys.argv[1:]))
