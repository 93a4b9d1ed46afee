"""The last slot of each queue, kept for the jobs that must never wait behind long ones.

The syncs share the ``targets`` queue with ``populate_target``: a worker whose five slots all
ran populates of large targets (minutes each at millions of MeFiles) started no sync until one
ended, and every tag change waited. So each worker process leaves the last free slot of each
queue where such jobs run to the jobs that take it (``JobSpec.takes_last_slot``: the drains,
the rescue; and any job not ours): while its other jobs of ours fill all the queue's slots but
one, its fetch asks only for those (``qlarius_fetch_job``'s flag, migration 0029). A queue of
concurrency 1 keeps no slot; nor does a round that ends when its queues are empty
(``--until-empty``: a filtered fetch that finds nothing would end it with long jobs waiting).

Counted here, in memory, per worker: the jobs it fetched that hold back, until their outcome
is written (not when Procrastinate forgets them, a moment later), so that the wake-up sent
then finds the slot free. A worker fetches one job at a time, so its count holds for its fetch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from procrastinate import jobs

from qlarius_jobs.jobs.blueprint import JobSpec


class LastSlot:
    def __init__(
        self,
        specs: Mapping[str, JobSpec[Any]],
        queues: Iterable[str],
        limit: Callable[[str], int],
        wake: Callable[[str], None],
    ) -> None:
        self.specs = specs
        # this process's queues where some job takes the last slot (in the others, such as
        # default, a kept slot would serve none of ours)
        taken_in = {spec.queue for spec in specs.values() if spec.takes_last_slot}
        self.queues = set(queues) & taken_in
        self.limit = limit  # a queue's concurrency in this process now
        self.wake = wake  # have a queue's worker look for a job now
        self._holding: dict[int, set[int]] = {}  # worker id -> its running jobs that hold back

    def holds_back(self, job: jobs.Job) -> bool:
        """A job of ours (its task, in its own queue) that leaves the last slot free."""
        spec = self.specs.get(job.task_name)
        return spec is not None and spec.queue == job.queue and not spec.takes_last_slot

    def keep(self, worker_id: int, queues: Iterable[str] | None) -> bool:
        """Whether the worker's next fetch takes only jobs that take the last slot."""
        names = list(queues or [])
        if len(names) != 1 or names[0] not in self.queues:
            return False  # one queue per worker (our runner's), where a slot is kept
        return len(self._holding.get(worker_id, ())) >= max(self.limit(names[0]) - 1, 1)

    def started(self, worker_id: int, job: jobs.Job) -> None:
        if job.id is not None and self.holds_back(job):
            self._holding.setdefault(worker_id, set()).add(job.id)

    def ended(self, job: jobs.Job) -> None:
        """Its outcome written (or dropped): the slot is free, and no notification says so."""
        for held in self._holding.values():
            if job.id in held:
                held.discard(job.id)
                self.wake(job.queue)
