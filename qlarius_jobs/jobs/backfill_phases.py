"""Where a backfill run's time goes, measured inside the real job.

Cheap timers (``time.perf_counter`` around each awaited statement group), summed per part of a
run (the run's own job, each chunk job) and added to the run's ``backfill_runs.phase_ms`` when
that part ends, so the run's one ``run N finished`` line carries the whole run's breakdown in
milliseconds, whichever processes ran its chunks. Computing and writing a snapshot happen in
one UPDATE statement, so here they are one phase (``fill``); the benchmark separates them by
timing the SELECT of the snapshots alone.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from psycopg import AsyncConnection

from qlarius_jobs.jobs.run import JobRun

# phase: what it times
PHASES = {
    "find": "counting the NULL rows and finding each batch's ids",
    "fill": "computing and writing the snapshots (the fill statements)",
    "commit": "the batches' commits (each waits for the disk)",
    "history": "the run's history: its row, each batch's counts, a chunk's progress and end",
    "share": "sharing a large backlog out as chunk jobs",
    "audit": "the drift audit of a sample of MeFiles",
    "connect": "taking a pooled connection, checking it, BEGIN",
}


@dataclass
class Phases:
    ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    @contextlib.contextmanager
    def timing(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.ms[phase] += (time.perf_counter() - started) * 1000

    @contextlib.asynccontextmanager
    async def transaction(self, run: JobRun) -> AsyncIterator[AsyncConnection]:
        """``run.transaction()``: taking the connection and BEGIN counted as ``connect``, the
        COMMIT as ``commit``, what runs inside by the caller's own phases."""
        started = time.perf_counter()
        async with run.connection() as conn, conn.transaction():
            self.ms["connect"] += (time.perf_counter() - started) * 1000
            yield conn
            started = time.perf_counter()
        self.ms["commit"] += (time.perf_counter() - started) * 1000

    def add(self, other: Phases) -> None:
        for phase, ms in other.ms.items():
            self.ms[phase] += ms

    def rounded(self) -> dict[str, int]:
        """Whole milliseconds, for the run's row and its log line."""
        return {phase: round(ms) for phase, ms in self.ms.items()}


def log_fields(phase_ms: dict[str, int] | None) -> dict[str, int]:
    """A run's breakdown as log fields: ``find_ms``, ``fill_ms``, ..."""
    return {f"{phase}_ms": int((phase_ms or {}).get(phase, 0)) for phase in PHASES}
