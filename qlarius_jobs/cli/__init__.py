"""``qlarius-jobs``: the operator's command line. One module per command group (database,
workers, jobs, tools), each adding its subparsers beside its handlers; ``parser`` puts them
together and ``entry`` runs one. Heavy imports stay inside the handlers: importing this
package loads neither the tooling nor the benchmarks, and builds nothing."""

from qlarius_jobs.cli.entry import main

__all__ = ["main"]
