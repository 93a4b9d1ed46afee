"""The count behind each queue's kept slot (worker/last_slot.py), on the catalog's own jobs."""

from __future__ import annotations

from procrastinate import jobs

from qlarius_jobs.jobs import catalog
from qlarius_jobs.worker.last_slot import LastSlot


def _job(job_id: int, task: str, queue: str) -> jobs.Job:
    return jobs.Job(
        id=job_id, queue=queue, lock=None, queueing_lock=None, task_name=task, task_kwargs={}
    )


def _slots(limits: dict[str, int], woken: list[str]) -> LastSlot:
    return LastSlot(catalog.specs(), limits, limits.__getitem__, woken.append)


def test_a_queue_keeps_its_last_slot_once_the_long_jobs_fill_the_others():
    woken: list[str] = []
    slots = _slots({"targets": 5, "offers": 2, "maintenance": 1}, woken)
    for n in range(1, 5):
        assert not slots.keep(7, ["targets"])
        slots.started(7, _job(n, "populate_target", "targets"))
    assert slots.keep(7, ["targets"])  # four populates of five slots: the fifth is kept
    assert not slots.keep(8, ["targets"])  # per worker
    slots.started(7, _job(10, "sync_pending_me_files", "targets"))  # takes it, counts nothing
    slots.started(7, _job(11, "populate_target", "offers"))  # not ours there: not counted
    slots.ended(_job(10, "sync_pending_me_files", "targets"))
    assert woken == []
    slots.ended(_job(2, "populate_target", "targets"))
    assert woken == ["targets"] and not slots.keep(7, ["targets"])
    slots.ended(_job(2, "populate_target", "targets"))  # its outcome written twice: once
    assert woken == ["targets"]

    slots.started(9, _job(20, "settle_target_offers", "offers"))
    assert slots.keep(9, ["offers"])  # concurrency 2: one long job at a time
    assert not slots.keep(5, ["maintenance"])  # concurrency 1 keeps no slot: a long job takes it
    assert not slots.keep(9, ["offers", "targets"])  # not one of our runner's workers
    assert not slots.keep(9, ["backfill"])  # nor a queue of this process


def test_no_slot_is_kept_where_no_job_of_ours_takes_it():
    """default holds only create_initial_pending_offers, which holds back: all ten slots run
    it (a kept one would serve none of ours)."""
    slots = _slots({"default": 10}, [])
    for n in range(1, 10):
        slots.started(3, _job(n, "create_initial_pending_offers", "default"))
    assert not slots.keep(3, ["default"])
