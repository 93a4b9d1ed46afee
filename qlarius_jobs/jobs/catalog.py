"""Every job of qlarius-jobs, by name: the blueprints the app registers, and deferral by name
for code that knows a job only by its name (the seed, the fault and storm tools)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from procrastinate import types
from psycopg import AsyncConnection

from qlarius_jobs.jobs import backfill, maintenance, offers, populations, target_offers
from qlarius_jobs.jobs.arguments import InvalidJobArguments
from qlarius_jobs.jobs.blueprint import JobBlueprint, JobSpec

BLUEPRINTS: tuple[JobBlueprint, ...] = (
    populations.blueprint,
    offers.blueprint,
    target_offers.blueprint,
    backfill.blueprint,
    maintenance.blueprint,
)


def specs() -> dict[str, JobSpec[Any]]:
    """Every job, by name."""
    return {name: spec for bp in BLUEPRINTS for name, spec in bp.specs.items()}


def queues(of: Mapping[str, JobSpec[Any]] | None = None) -> list[str]:
    """The queues the jobs ``of`` (default: every job) run on, sorted."""
    return sorted({job.queue for job in (specs() if of is None else of).values()})


def spec(name: str) -> JobSpec[Any]:
    try:
        return specs()[name]
    except KeyError:
        raise InvalidJobArguments(f"no such task: {name}") from None


async def defer_job(
    conn: AsyncConnection,
    name: str,
    *,
    schedule_in: types.TimeDeltaParams | None = None,
    **task_kwargs: Any,
) -> int | None:
    """``JobSpec.defer`` of the job called ``name``."""
    return await spec(name).defer(conn, schedule_in=schedule_in, **task_kwargs)
