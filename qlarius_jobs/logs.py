"""structlog, configured once: JSON lines by default, readable output on a terminal.

Procrastinate's own (stdlib) log records go through the same renderer, so a worker's output
is one event per line whichever library wrote it. Quiet by default: each job writes one line
when it ends (``jobs/blueprint.py``); Procrastinate's per-job events (carrying the whole job),
its start/stop and registration chatter are DEBUG. Its warnings and errors stay.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from qlarius_jobs.settings import get_settings

_configured = False


def _use_console(fmt: str) -> bool:
    if fmt == "auto":
        return sys.stderr.isatty()
    return fmt == "console"


def configure_logging(fmt: str | None = None, level: str | None = None) -> None:
    """Idempotent; the first call wins unless ``fmt``/``level`` are given explicitly."""
    global _configured
    if _configured and fmt is None and level is None:
        return
    settings = get_settings()
    fmt = fmt or settings.log_format
    level = level or settings.log_level
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if _use_console(fmt)
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if not _use_console(fmt) else _identity,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(ProcrastinateChatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    logging.getLogger("psycopg").setLevel(logging.WARNING)
    # the console's server: its start and stop lines say nothing the CLI does not print
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    logging.getLogger("procrastinate.blueprints").setLevel(logging.WARNING)  # import-time noise
    _configured = True


# Procrastinate's per-job events: each job's own end line replaces them (a failure's traceback
# is in the error history, `qlarius-jobs status` and the job_errors table).
JOB_TRAIL = frozenset({"job_error", "job_error_retry", "job_aborted", "job_aborted_retry"})


class ProcrastinateChatter(logging.Filter):
    """Procrastinate's INFO records and per-job events are shown only at DEBUG. The record
    itself is left as it is: other handlers (a test's, an application's) see it whole."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("procrastinate"):
            return True
        if record.levelno <= logging.INFO or getattr(record, "action", None) in JOB_TRAIL:
            return logging.getLogger().getEffectiveLevel() <= logging.DEBUG
        return True


def _identity(logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
    return event


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
