"""Benchmark 4: the job runner. No-op jobs per second through the worker stack production runs
(``worker.runner.run_workers``: the resilient job manager, the wake-ups, the middleware, a
``JobSpec``'s argument validation, time limit and summary log) against a bare Procrastinate
worker at equal concurrency, and deferral by batch against one job at a time."""

from __future__ import annotations

import time
from typing import Any

from procrastinate import App, PsycopgConnector
from procrastinate import worker as procrastinate_worker

from qlarius_jobs.app import build_app
from qlarius_jobs.bench.base import BenchConfig, Result, analyze_jobs, atimed
from qlarius_jobs.jobs.arguments import JobArgs
from qlarius_jobs.jobs.blueprint import JobBlueprint
from qlarius_jobs.jobs.run import JobRun
from qlarius_jobs.settings import get_settings
from qlarius_jobs.worker import runner

BENCH_QUEUE, BARE_QUEUE = "bench", "bench_bare"

blueprint = JobBlueprint()


class NoopArgs(JobArgs):
    n: int


@blueprint.job(name="bench_noop", queue=BENCH_QUEUE, args_model=NoopArgs, time_limit_seconds=60)
async def bench_noop(run: JobRun, args: NoopArgs) -> dict[str, Any]:
    return {"n": args.n}


def _bare_app(conninfo: str) -> App:
    bare = App(connector=PsycopgConnector(conninfo=conninfo, max_size=get_settings().pool_max_size))

    @bare.task(name="bench_noop_bare", queue=BARE_QUEUE)
    async def bench_noop_bare(n: int) -> None:
        return None

    return bare


async def _drain_queue(app: App, queue: str, concurrency: int, ours: bool) -> None:
    if ours:
        await runner.run_workers(
            app,
            {queue: concurrency},
            wait=False,
            install_signal_handlers=False,
            fetch_job_polling_interval=0.05,
            periodic=False,
        )
        return
    worker = procrastinate_worker.Worker(
        app=app,
        queues=[queue],
        concurrency=concurrency,
        wait=False,
        install_signal_handlers=False,
        fetch_job_polling_interval=0.05,
    )
    await worker.run()


async def bench_runner(conninfo: str, cfg: BenchConfig, size: int, pops: int) -> None:
    # A fresh app with only the no-op job, as the bare app has only its own: the same pool
    # size, and no periodic jobs of ours in the measurement.
    ours, bare = build_app([blueprint], database=lambda: conninfo), _bare_app(conninfo)
    jobs_args = [{"n": i} for i in range(cfg.noop_jobs)]
    async with bare.open_async(), ours.open_async():
        stacks = [
            (ours, "bench_noop", BENCH_QUEUE, True),
            (bare, "bench_noop_bare", BARE_QUEUE, False),
        ]
        best = [float("inf"), float("inf")]
        for round_ in range(cfg.rounds):  # alternate who goes first; keep each one's best
            order = [0, 1] if round_ % 2 == 0 else [1, 0]
            for i in order:
                stack_app, task, queue, is_ours = stacks[i]
                await stack_app.configure_task(task).batch_defer_async(*jobs_args)
                analyze_jobs(conninfo)
                _, seconds = await atimed(_drain_queue(stack_app, queue, cfg.concurrency, is_ours))
                best[i] = min(best[i], seconds)
        ours_best, bare_best = best
        single = cfg.noop_jobs // 10
        _, batch_seconds = await atimed(
            ours.configure_task("bench_noop").batch_defer_async(*jobs_args)
        )
        started = time.perf_counter()
        for args in jobs_args[:single]:
            await ours.configure_task("bench_noop").defer_async(**args)
        single_seconds = time.perf_counter() - started
        await _drain_queue(ours, BENCH_QUEUE, cfg.concurrency, True)
    cfg.results.append(
        Result(
            size=size,
            populations=pops,
            benchmark=f"no-op jobs, concurrency {cfg.concurrency}",
            unit="jobs",
            ours_count=cfg.noop_jobs,
            ours_seconds=ours_best,
            baseline="bare Procrastinate worker, same database",
            baseline_count=cfg.noop_jobs,
            baseline_seconds=bare_best,
            target=">= 0.9x",
            target_ratio=0.9,
        )
    )
    cfg.results.append(
        Result(
            size=size,
            populations=pops,
            benchmark="deferral: batch_defer",
            unit="jobs",
            ours_count=cfg.noop_jobs,
            ours_seconds=batch_seconds,
            baseline="one defer per job",
            baseline_count=single,
            baseline_seconds=single_seconds,
        )
    )
