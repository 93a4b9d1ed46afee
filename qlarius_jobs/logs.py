"""structlog, configured once: JSON lines by default, readable output on a terminal.

Procrastinate's own (stdlib) log records go through the same renderer, so a worker's output
is one event per line whichever library wrote it.
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
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # Procrastinate logs every job start and end at INFO; keep them, they are the job trail.
    logging.getLogger("psycopg").setLevel(logging.WARNING)
    logging.getLogger("procrastinate.blueprints").setLevel(logging.WARNING)  # import-time noise
    _configured = True


def _identity(logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
    return event


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
