"""Settings, read once from the environment (prefix ``QLARIUS_``) and ``.env``.

``DATABASE_URL`` (the conventional name) is honoured as well as ``QLARIUS_DATABASE_URL``.
When neither is set, the project starts its own PostgreSQL cluster (see ``database.py``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, PositiveInt
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="QLARIUS_", env_file=".env", extra="ignore", populate_by_name=True
    )

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("QLARIUS_DATABASE_URL", "DATABASE_URL"),
        description="libpq URL or conninfo; unset means the embedded project cluster",
    )
    project_dir: Path | None = Field(
        default=None, description="where the embedded cluster lives (.pgdata/); default: autodetect"
    )
    embedded_database: str = "qlarius_jobs"

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    pool_min_size: PositiveInt = 1
    pool_max_size: PositiveInt = 40

    retry_backoff_seconds: float = Field(
        default=10.0, ge=0, description="first retry delay; doubles at each attempt"
    )

    backfill_cron: str = "0 * * * *"
    backfill_batch_size: PositiveInt = 500
    backfill_time_budget_seconds: float = Field(default=600.0, gt=0)

    snapshot_band_batch_size: PositiveInt = 500

    offers_retry_delay_seconds: PositiveInt = 180
    offers_give_up_after_seconds: PositiveInt = 3600
    offer_pending_seconds: int = Field(default=0, ge=0)

    demo_me_files: PositiveInt = 3000


@functools.cache
def get_settings() -> Settings:
    return Settings()
