"""The console script's entry point: parse, set up logging, run the command, and turn the
errors an operator can act on into one line and an exit code (never a traceback)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from qlarius_jobs.cli.parser import build_parser
from qlarius_jobs.db import connection
from qlarius_jobs.logs import configure_logging
from qlarius_jobs.ops.jobs import JobActionRefused


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        configure_logging(fmt=args.log_format)
        return args.handler(args)
    except (connection.DatabaseUnavailable, ValueError) as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"qlarius-jobs: {line}", file=sys.stderr)
        return 2
    except JobActionRefused as exc:
        print(f"qlarius-jobs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
