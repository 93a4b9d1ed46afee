"""Settings, read once from the environment (prefix ``QLARIUS_``) and ``.env``.

``DATABASE_URL`` (the conventional name) is honoured as well as ``QLARIUS_DATABASE_URL``.
When neither is set, the project starts its own PostgreSQL cluster (see ``dev/embedded.py``).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from pathlib import Path
from typing import Literal

import croniter
import pydantic_settings
from pydantic import (
    AliasChoices,
    Field,
    PositiveInt,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="QLARIUS_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        allow_inf_nan=False,  # an infinite backoff or time limit is a mistake, not a setting
    )

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("QLARIUS_DATABASE_URL", "DATABASE_URL"),
        description="libpq URL or conninfo; unset means the embedded project cluster",
    )
    read_database_url: str | None = Field(
        default=None,
        description="the console's pages and /metrics read this server (a streaming standby "
        "of QLARIUS_DATABASE_URL); its actions still go to QLARIUS_DATABASE_URL. Unset: the "
        "primary",
    )
    project_dir: Path | None = Field(
        default=None, description="where the embedded cluster lives (.pgdata/); default: autodetect"
    )
    embedded_database: str = "qlarius_jobs"
    embedded_fast_commit: bool = Field(
        default=False,
        description="embedded cluster only: synchronous_commit=off (faster commits; a server "
        "crash can lose the last confirmed work). Off: durable.",
    )

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    behind_pooler: bool = Field(
        default=False,
        description="PgBouncer-style transaction pooling: no LISTEN/NOTIFY, no prepared statements",
    )
    fetch_polling_seconds: float = Field(
        default=5.0,
        gt=0,
        description="how often workers look for jobs and abort requests without a notification "
        "(the only way behind a pooler)",
    )
    pool_min_size: PositiveInt = 1
    pool_max_size: PositiveInt = 40
    pool_timeout_seconds: float = Field(
        default=10.0, gt=0, description="how long a caller waits for a pooled connection"
    )
    pool_max_idle_seconds: float = Field(
        default=60.0, gt=0, description="a pooled connection idle this long is closed"
    )
    database_outage_limit_seconds: float = Field(
        default=300.0,
        gt=0,
        description="a worker rides out a lost database this long, then exits non-zero",
    )

    retry_backoff_seconds: float = Field(
        default=10.0, ge=0, description="first retry delay; doubles at each attempt"
    )

    backfill_cron: str = "0 * * * *"
    backfill_batch_size: PositiveInt = Field(
        # a chunk in one transaction: each batch pays a commit, its history and the fixed
        # cost of its statements, ~10 ms at 500 rows (README "Performance")
        default=5000,
        description="rows per backfill batch (one transaction)",
    )
    backfill_time_budget_seconds: float = Field(default=600.0, gt=0)
    backfill_chunk_size: PositiveInt = Field(
        default=5000, description="a table with more NULL rows is shared out as chunk jobs"
    )

    snapshot_band_batch_size: PositiveInt = 500
    audit_sample_size: int = Field(
        default=1000, ge=0, description="MeFiles each backfill run audits for drift (0: none)"
    )

    populate_range_size: PositiveInt = Field(
        default=50_000,
        description="MeFiles per populate statement, a range of ids (its sorts stay in memory)",
    )

    # Level-triggered syncs and reconciles (see drains.py and README "Concurrency").
    sync_batch_size: PositiveInt = Field(
        default=1000, description="MeFiles a sync batch applies in one statement"
    )
    reconcile_batch_size: PositiveInt = Field(
        default=1000, description="MeFiles a reconcile batch handles in one transaction"
    )
    drain_time_budget_seconds: float = Field(
        default=60.0, gt=0, description="a drain job hands over to a successor after this"
    )
    drain_lease_seconds: float = Field(
        default=3.0,
        gt=0,
        description="a drainer that stops renewing its lease (a dead host) loses it after this",
    )
    stuck_pending_seconds: float = Field(
        default=120.0,
        gt=0,
        description="pending work a drain could take that is older than this is reported stuck",
    )
    controls_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="how often each worker process reads the schedules and queue controls "
        "(a change is also heard at once, by NOTIFY, where LISTEN works)",
    )
    wakeup_sweep_seconds: float = Field(
        default=2.0,
        gt=0,
        description="how often each worker process looks for pending work a lost wake-up left",
    )

    offers_retry_delay_seconds: PositiveInt = 180
    offers_give_up_after_seconds: PositiveInt = 3600
    offer_pending_seconds: int = Field(default=0, ge=0)

    demo_me_files: PositiveInt = 3000

    # Operations (Oban's queues, Lifeline, Pruner).
    queues: str = Field(
        default="default=10,targets=5,offers=10,maintenance=3",
        description="queue=concurrency, comma separated: what `qlarius-jobs worker` runs",
    )
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    stalled_after_seconds: float = Field(default=45.0, gt=0)
    rescue_cron: str = "* * * * * */30"  # every 30 s (croniter: seconds are the 6th field)
    prune_cron: str = "17 * * * *"
    prune_after_days: PositiveInt = 7
    # Per-state retention (Oban's Pruner, River's Completed/Cancelled/DiscardedJobRetention):
    # unset, a state keeps prune_after_days. Aborted jobs follow the cancelled retention.
    prune_succeeded_after_days: PositiveInt | None = None
    prune_failed_after_days: PositiveInt | None = None
    prune_cancelled_after_days: PositiveInt | None = None
    prune_batch_size: PositiveInt = 1000
    prune_rest_ratio: float = Field(
        default=1.0,
        ge=0,
        le=100,
        description="after each batch the prune rests this many times as long as the batch "
        "took (0: no rest)",
    )
    job_counts_exact_below: PositiveInt = Field(
        default=500_000,
        description="above this many rows in the job table, the overview and /metrics estimate "
        "the finished states' counts from the planner's statistics (waiting, running: exact)",
    )
    backfill_history_days: PositiveInt = 90
    task_timeouts: dict[str, float] = Field(
        default_factory=dict, description='per-task time limits, e.g. {"populate_target": 600}'
    )

    # The console (qlarius-jobs web) and the probes.
    web_host: str = Field(default="127.0.0.1", description="where the console listens")
    web_port: int = Field(default=8000, ge=1, le=65535)
    web_password: SecretStr | None = Field(
        default=None, description="every page but the probes asks for it (HTTP Basic, any user)"
    )
    web_read_only: bool = Field(
        default=False, description="no retry, cancel, abort or re-populate: hidden and refused"
    )
    web_readonly_password: SecretStr | None = Field(
        default=None,
        description="a viewer's password: every page, every action hidden and refused",
    )
    web_refresh_seconds: int = Field(
        default=5, ge=0, le=3600, description="the live pages reload this often (0: never)"
    )
    web_bulk_limit: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="most jobs one bulk action of the console touches",
    )

    @field_validator("backfill_cron", "rescue_cron", "prune_cron")
    @classmethod
    def _cron_fires(cls, value: str) -> str:
        """A schedule that is not a cron expression, or never fires, would stop every worker
        when its periodic deferrer fails: refuse it when the settings are read."""
        if not croniter.croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression")
        try:
            croniter.croniter(value, dt.datetime.now(dt.UTC)).get_next(dt.datetime)
        except (croniter.CroniterBadDateError, croniter.CroniterError) as exc:
            raise ValueError(f"{value!r} never fires ({exc})") from None
        return value

    def prune_retention_days(self) -> dict[str, int]:
        """Days each finished state is kept (aborted: as cancelled), each state's own setting
        or, unset, ``prune_after_days``."""
        cancelled = self.prune_cancelled_after_days or self.prune_after_days
        return {
            "succeeded": self.prune_succeeded_after_days or self.prune_after_days,
            "failed": self.prune_failed_after_days or self.prune_after_days,
            "cancelled": cancelled,
            "aborted": cancelled,
        }

    @field_validator("stalled_after_seconds")
    @classmethod
    def _two_heartbeats_before_stalled(cls, value: float, info: ValidationInfo) -> float:
        """A rescue takes the jobs of a worker whose heartbeat is older than this: a live
        worker must fit two heartbeats in it, or it is judged stalled again and again and its
        jobs run twice at once (seen with 4 s against 3 s)."""
        heartbeat = info.data.get("heartbeat_seconds")
        if heartbeat is not None and value < 2 * heartbeat:
            raise ValueError(
                f"must be at least twice QLARIUS_HEARTBEAT_SECONDS ({heartbeat:g}), or live "
                "workers are judged stalled and their jobs run again elsewhere"
            )
        return value

    @field_validator("queues")
    @classmethod
    def _queue_spec(cls, value: str) -> str:
        parse_queue_spec(value)
        return value

    @field_validator("task_timeouts")
    @classmethod
    def _positive_time_limits(cls, value: dict[str, float]) -> dict[str, float]:
        for task, seconds in value.items():
            if not 0 < seconds < float("inf"):
                raise ValueError(f"{task}: a time limit must be a positive number of seconds")
        return value


def parse_queue_spec(spec: str) -> dict[str, int | None]:
    """``"targets,offers=4"`` -> ``{"targets": None, "offers": 4}``: ``name=concurrency``
    items, comma separated; a bare name leaves its concurrency to the caller. The one parser
    of queue lists (``QLARIUS_QUEUES``, ``worker --queues``); raises ``ValueError`` in one line."""
    queues: dict[str, int | None] = {}
    for item in spec.split(","):
        name, sep, concurrency = item.strip().partition("=")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"{item.strip()!r} is not queue=concurrency")
        if sep and not (concurrency.isdigit() and int(concurrency) >= 1):
            raise ValueError(f"queue {name}: concurrency must be a positive integer")
        if name in queues:
            raise ValueError(f"queue {name} is listed twice")
        queues[name] = int(concurrency) if sep else None
    return queues


class SettingsError(ValueError):
    """A setting is wrong; the message names it in one line."""


def describe_error(exc: ValidationError) -> str:
    """One line per wrong setting: its name, its value, what is allowed, e.g.
    ``invalid setting QLARIUS_BACKFILL_CRON='banana': 'banana' is not a cron expression``."""
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "settings"
        name = "QLARIUS_" + field.upper()
        message = str(err.get("ctx", {}).get("error", "")) or err["msg"]
        value = err.get("input")
        shown = "" if value is None or (isinstance(value, dict) and not value) else f"={value!r}"
        lines.append(f"invalid setting {name}{shown}: {message}")
    return "\n".join(lines)


@functools.cache
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        message = describe_error(exc)
    except pydantic_settings.SettingsError as exc:  # a value that is not JSON where JSON is due
        field = re.search(r'field "(\w+)"', str(exc))
        name = "QLARIUS_" + field[1].upper() if field else "a setting"
        message = f"invalid setting {name}: not valid JSON"
    raise SettingsError(message)
