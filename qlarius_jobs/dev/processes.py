"""Worker processes for the tools and the tests: ``qlarius-jobs worker`` in a subprocess, as
an operator runs it. One helper for the tests, the storm and the fault scenarios."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path

BIN = Path(sys.executable).parent  # the virtual environment's scripts: qlarius-jobs, procrastinate
# The schedules a tool's run must not see ticks of (ops.controls.apply_schedules: disabled).
NO_BACKFILL_OR_PRUNE: dict[str, str | None] = {
    "backfill_missing_snapshots": None,
    "prune_finished_jobs": None,
}


class WorkerProcess:
    """``qlarius-jobs worker ARGS`` with ``env`` (default: this process's), its output going to
    ``log_path`` (default: a new temporary file): a pipe that nobody reads until the end fills
    up and blocks the worker's event loop on a log write."""

    def __init__(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="worker-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
            # a file of our own making goes with this object (read it while you hold it)
            weakref.finalize(self, log_path.unlink, missing_ok=True)
        self.log_path = log_path
        self._terminated = False
        with log_path.open("w") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [str(BIN / "qlarius-jobs"), "worker", *args],
                env=None if env is None else dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def last_line(self) -> str:
        lines = [line for line in self.output().splitlines() if line]
        return lines[-1] if lines else ""

    def poll(self) -> int | None:
        return self.proc.poll()

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def terminate(self) -> None:
        """SIGTERM, once, if still running: the worker stops fetching and finishes its jobs
        (a second SIGTERM would make it exit at once)."""
        if self.proc.poll() is None and not self._terminated:
            self._terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60) -> str:
        """SIGTERM (if still running), wait (SIGKILL past ``timeout``), and return everything
        it wrote; ``returncode`` then says how it ended."""
        self.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        return self.output()

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no clean-up of any kind."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
