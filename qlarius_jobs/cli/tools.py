"""The developer's tools: seed (a data set), bench, storm and faults. Each one's module
(qlarius_jobs.dev, qlarius_jobs.bench) is imported only when its command runs: the runtime
never loads the tooling (tests/unit/test_layers.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qlarius_jobs.cli.database import database, migrated_database


def add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="benchmarks against baselines, in <db>_bench")
    bench.add_argument(
        "--sizes",
        default="5000,50000,500000",
        help="MeFiles per size, comma separated (populations: about twice)",
    )
    bench.add_argument(
        "--output", type=Path, default=Path("bench-results.json"), help="JSON results file"
    )
    bench.add_argument("--sample", type=int, default=500, help="rows for the row-by-row way")
    bench.add_argument(
        "--noop-jobs", type=int, default=3000, help="no-op jobs per round of the runner row"
    )
    bench.add_argument(
        "--sync-backlogs",
        default="1000,100000",
        help="changed MeFiles a sync drains, per row (capped at the size)",
    )
    bench.add_argument(
        "--storm-seconds", type=float, default=60, help="length of the storm row (0: none)"
    )
    bench.add_argument(
        "--storm-me-files", type=int, default=3000, help="MeFiles of the storm row's data set"
    )
    bench.add_argument(
        "--console-jobs",
        type=int,
        default=1_000_000,
        help="jobs in the table the console row renders against (0: no console row)",
    )
    bench.add_argument("--rounds", type=int, default=3, help="no-op runs per stack (best kept)")
    bench.add_argument(
        "--only",
        default="",
        help="run only these benchmarks, comma separated: "
        "backfill,populate,sync,runner,console,storm (default: all)",
    )
    bench.set_defaults(handler=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from qlarius_jobs.bench import harness

    return harness.main(
        args.sizes,
        args.output,
        sample=args.sample,
        noop_jobs=args.noop_jobs,
        sync_backlogs=args.sync_backlogs,
        rounds=args.rounds,
        storm_seconds=args.storm_seconds,
        storm_me_files=args.storm_me_files,
        console_jobs=args.console_jobs,
        only=args.only,
    )


def add_bench_scale(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    scale = sub.add_parser(
        "bench-scale", help="the cost curve: populate, backfill and sync at growing sizes"
    )
    scale.add_argument(
        "--sizes", default="20000,200000,2000000", help="MeFiles per size, comma separated"
    )
    scale.add_argument(
        "--output", type=Path, default=Path("bench-scale-results.json"), help="JSON results file"
    )
    scale.add_argument(
        "--chart", type=Path, default=Path("docs/bench-scale.svg"), help="SVG chart to write"
    )
    scale.add_argument(
        "--sync-backlog", type=int, default=10_000, help="changed MeFiles the sync row drains"
    )
    scale.add_argument(
        "--regenerate",
        action="store_true",
        help="generate each data set again, even if an earlier run kept one",
    )
    scale.set_defaults(handler=cmd_bench_scale)


def cmd_bench_scale(args: argparse.Namespace) -> int:
    from qlarius_jobs.bench import scale
    from qlarius_jobs.bench.harness import parse_sizes

    cfg = scale.ScaleConfig(
        sync_backlog=args.sync_backlog, regenerate=args.regenerate, chart=args.chart
    )
    return scale.main(list(parse_sizes(args.sizes)), args.output, cfg)


def add_bench_jobs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser(
        "bench-jobs",
        help="fetches, console, /metrics and the prune against a job table of millions",
    )
    bench.add_argument(
        "--jobs", type=int, default=10_000_000, help="finished jobs the table is filled with"
    )
    bench.add_argument(
        "--prune", type=int, default=1_000_000, help="of them, the oldest: what the prune deletes"
    )
    bench.add_argument(
        "--noop-jobs", type=int, default=3000, help="no-op jobs per drain of the fetch rows"
    )
    bench.add_argument("--rounds", type=int, default=2, help="drains per table (best kept)")
    bench.add_argument("--renders", type=int, default=40, help="renders per console page")
    bench.add_argument(
        "--output", type=Path, default=Path("bench-jobs-results.json"), help="JSON results file"
    )
    bench.set_defaults(handler=cmd_bench_jobs)


def cmd_bench_jobs(args: argparse.Namespace) -> int:
    from qlarius_jobs.bench import job_table

    return job_table.main(
        job_table.JobTableConfig(
            jobs=args.jobs,
            prune=args.prune,
            noop_jobs=args.noop_jobs,
            rounds=args.rounds,
            renders=args.renders,
        ),
        args.output,
    )


def add_faults(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    faults = sub.add_parser(
        "faults", help="restart, crash and starve a throwaway server under workers; kill them"
    )
    faults.add_argument("--short", action="store_true", help="shorter outages and waits")
    faults.set_defaults(handler=cmd_faults)


def cmd_faults(args: argparse.Namespace) -> int:
    from qlarius_jobs.dev import faults

    return faults.main(short=args.short)


def add_storm(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    storm = sub.add_parser(
        "storm", help="concurrent load and a killed worker, then every invariant checked"
    )
    storm.add_argument("--seconds", type=float, default=180.0, help="length of the load")
    storm.add_argument("--workers", type=int, default=3, help="worker processes")
    storm.add_argument("--me-files", type=int, default=3000, help="MeFiles generated")
    storm.add_argument("--targets", type=int, default=4, help="targets generated")
    storm.add_argument(
        "--changers", type=int, default=6, help="concurrent tag-changing transactions"
    )
    storm.add_argument("--no-kill", action="store_true", help="do not kill a worker midway")
    storm.add_argument(
        "--pooler",
        action="store_true",
        help="workers and application through PgBouncer in transaction mode",
    )
    storm.set_defaults(handler=cmd_storm)


def cmd_storm(args: argparse.Namespace) -> int:
    from qlarius_jobs.dev import storm

    return storm.main(
        storm.StormConfig(
            seconds=args.seconds,
            workers=args.workers,
            me_files=args.me_files,
            targets=args.targets,
            changers=args.changers,
            kill=not args.no_kill,
            pooler=args.pooler,
        ),
        database(),
    )


def add_seed(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    seed_cmd = sub.add_parser("seed", help="generate a data set (set-based, server-side)")
    seed_cmd.add_argument("--me-files", type=int, default=3000, help="MeFiles to generate")
    seed_cmd.add_argument("--parents", type=int, default=30, help="parent traits (questions)")
    seed_cmd.add_argument("--targets", type=int, default=4, help="targets (3 bands each)")
    seed_cmd.add_argument(
        "--campaigns-per-target", type=int, default=1, help="live campaigns bidding on each target"
    )
    seed_cmd.add_argument(
        "--null-share",
        type=float,
        default=0.02,
        help="share of populations, offers, ad events left NULL",
    )
    seed_cmd.add_argument(
        "--ad-event-share", type=float, default=0.2, help="share of offers with an ad event"
    )
    seed_cmd.add_argument(
        "--no-populations",
        action="store_true",
        help="leave targets not populated (no populations, offers, events)",
    )
    seed_cmd.set_defaults(handler=cmd_seed)


def cmd_seed(args: argparse.Namespace) -> int:
    from qlarius_jobs.dev import seed

    sizes = seed.SeedSizes(  # checked before anything touches the database
        me_files=args.me_files,
        parents=args.parents,
        targets=args.targets,
        campaigns_per_target=args.campaigns_per_target,
        populate=not args.no_populations,
        null_share=args.null_share,
        ad_event_share=args.ad_event_share,
    )
    conninfo = migrated_database()
    print(json.dumps(seed.seed(conninfo, sizes)))
    return 0
