"""How a worker process lives and stops: its stop signals (the first asks, a second exits at
once), the supervision of its queue workers and helpers (any that stops on its own stops them
all), and the one line saying why."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from procrastinate import worker as procrastinate_worker

from qlarius_jobs.logs import get_logger
from qlarius_jobs.worker.resilience import Availability

log = get_logger(__name__)


class StopSignals:
    """SIGINT and SIGTERM for a worker process: the first asks every listener (the workers of
    the round running now) to stop; a second exits at once. Installed once for a process that
    runs several rounds (``--until-empty``), so that no signal falls between two rounds."""

    def __init__(self) -> None:
        self.received: int = 0  # the first signal's number, 0 until one arrives
        self.listeners: list[Callable[[int], None]] = []

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._arrived, signum)

    def uninstall(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)

    def _arrived(self, signum: int) -> None:
        if self.received:
            log.warning("second stop signal: exiting now", signal=signal.Signals(signum).name)
            sys.stderr.flush()
            os._exit(130)
        self.received = signum
        for listener in list(self.listeners):
            listener(signum)


class WorkersStopped(RuntimeError):
    """The workers stopped without being asked to; the message says why, in one line."""


async def supervise(
    workers: list[procrastinate_worker.Worker],
    helpers: Mapping[str, Coroutine[Any, Any, None]],
    stop_requested: asyncio.Event,
    wait: bool,
    availability: Availability,
) -> str | None:
    """Run the workers (and the process's helpers: wake-ups, scheduler, queue controls)
    until every worker has ended. One that raises, or ends while running for good (``wait``)
    without a stop request, stops the others. Returns why, or None for a normal end."""
    names = {
        asyncio.create_task(w.run()): f"worker of queue {','.join(w.queues or [])}" for w in workers
    }
    helper_tasks = {asyncio.create_task(coro): name for name, coro in helpers.items()}
    # the database gone, however it was seen, stops the process
    helper_tasks[asyncio.create_task(availability.gave_up.wait())] = "watch of the database"
    names.update(helper_tasks)
    failure: str | None = None
    pending = set(names)
    try:
        while pending - set(helper_tasks):
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = None if task.cancelled() else task.exception()
                ended_on_its_own = wait and not stop_requested.is_set()
                # the database gone stops the process with its reason, even one running until
                # empty (a worker stopped by a failed side task ends without an error)
                if failure is None and (error is not None or ended_on_its_own or availability.gone):
                    availability.stopping = True
                    failure = availability.gone or (
                        one_line(error)
                        if error is not None
                        else f"the {names[task]} stopped on its own (see the error above)"
                    )
                    for worker in workers:
                        worker.stop()
    finally:
        # Cancelled ourselves (an embedding application, a test): the workers are cancelled
        # too, as asyncio.gather would do, and waited for; none is left running unseen.
        for task in names:
            task.cancel()
        for task in names:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return failure


def one_line(error: BaseException) -> str:
    """``Type: first line``, and the same for what caused it (Procrastinate's
    ``ConnectorException: Database error.`` alone does not say which error of the database)."""
    parts = []
    seen: BaseException | None = error
    while seen is not None and len(parts) < 3:
        text = str(seen).strip().splitlines()
        parts.append(f"{type(seen).__name__}: {text[0]}" if text else type(seen).__name__)
        seen = seen.__cause__ or seen.__context__
    return "; caused by ".join(parts)
