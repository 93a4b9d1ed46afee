"""Job declarations, without a database: the catalog, argument models, attempts, backoff."""

from __future__ import annotations

from typing import Any

import pytest

from qlarius_jobs.jobs import catalog
from qlarius_jobs.jobs.arguments import InvalidJobArguments, NoArgs, TargetArgs, parse_args
from qlarius_jobs.jobs.blueprint import JobBlueprint
from qlarius_jobs.jobs.run import Backoff, JobGaveUp, JobRun


def test_the_catalog_names_every_job_once_with_its_queue_and_options():
    specs = catalog.specs()
    assert {name: (s.queue, s.attempts) for name, s in specs.items()} == {
        "populate_target": ("targets", 3),
        "sync_pending_me_files": ("targets", 3),
        "sync_me_file_to_target_populations": ("targets", 3),
        "snapshot_band_populations": ("targets", 3),
        "create_initial_pending_offers": ("default", 5),
        "reconcile_pending_offers": ("offers", 3),
        "reconcile_offers_for_me_file": ("offers", 3),
        "settle_target_offers": ("offers", 5),
        "backfill_missing_snapshots": ("maintenance", 3),
        "backfill_snapshot_chunk": ("maintenance", 3),
        "rescue_stalled_jobs": ("maintenance", 1),
        "prune_finished_jobs": ("maintenance", 3),
    }
    assert specs["populate_target"].time_limit_seconds == 1800
    scheduled = {name for name, s in specs.items() if s.schedule is not None}
    assert scheduled == {"backfill_missing_snapshots", "rescue_stalled_jobs", "prune_finished_jobs"}


def test_an_unknown_job_name_is_one_clear_error():
    with pytest.raises(InvalidJobArguments, match="no such task: nope"):
        catalog.spec("nope")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({}, "target_id"),
        ({"target_id": "5"}, "target_id"),
        ({"target_id": 0}, "target_id"),
        ({"target_id": True}, "target_id"),
        ({"target_id": 1, "x": 2}, "x"),
    ],
)
def test_arguments_are_strict(raw: dict[str, Any], field: str):
    with pytest.raises(InvalidJobArguments, match=f"populate_target: invalid arguments: {field}"):
        parse_args("populate_target", TargetArgs, raw)
    assert parse_args("populate_target", TargetArgs, {"target_id": 7}).target_id == 7


def test_backoff_doubles_and_stops_at_the_last_attempt_or_a_final_error():
    backoff = Backoff(attempts=3, backoff_seconds=2)
    assert backoff.will_retry(RuntimeError(), 0) and backoff.will_retry(RuntimeError(), 1)
    assert not backoff.will_retry(RuntimeError(), 2)
    assert not backoff.will_retry(InvalidJobArguments("bad"), 0)
    assert not backoff.will_retry(JobGaveUp("waited"), 0)


def test_a_job_declared_twice_on_a_blueprint_is_refused():
    blueprint = JobBlueprint()

    async def body(run: JobRun, args: NoArgs) -> dict[str, Any]:
        return {}

    blueprint.job(name="twice", queue="default", args_model=NoArgs)(body)
    with pytest.raises(ValueError, match="job twice is declared twice"):
        blueprint.job(name="twice", queue="default", args_model=NoArgs)(body)
