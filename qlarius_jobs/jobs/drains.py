"""Level-triggered work: pending rows in the database, drained in batches.

A committed change leaves a pending row (``qlarius_pending_syncs``: a MeFile's tags changed;
``qlarius_pending_reconciles``: a MeFile's populations changed). A drain takes a batch of
rows and applies them in one transaction: it deletes the rows, then, in later statements of
the same transaction (hence a later snapshot), applies what they ask. A change committed
after that delete is still pending afterwards, so no change can be lost, whatever the timing.

Who drains, and when (see README "Concurrency"):

- one *drainer* per kind at a time: the job that holds the kind's lease, a row of
  ``qlarius_drain_leases`` renewed in each batch's transaction (no session state: a pooler may
  run each transaction on another server session, and a dead holder's lease lapses after
  ``QLARIUS_DRAIN_LEASE_SECONDS``). Others exit at once. The drainer loops over batches until
  nothing is left it can take, releases the lease, and only then checks once more for work,
  so a change whose wake-up arrived while it still held the lease is never left behind;
- each batch holds the transaction advisory lock ``(NAMESPACE, batch_key)``, so batches never
  overlap even if two drainers did: a scope job (a populate, a campaign's offers) passes that
  barrier between two batches to take its target;
- a batch share-locks the targets no scope job holds (``SKIP LOCKED``: it never waits) and
  leaves the part of a change that concerns a busy target to a (me_file, target) row, applied
  once that target is free.

Wake-ups: inserting pending rows NOTIFYs ``qlarius_wakeup`` at commit; the runner's listener
(and its periodic sweep, for anything a lost notification left) defers a drain job then.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.logs import get_logger
from qlarius_jobs.settings import get_settings

log = get_logger(__name__)

SQL = QueryFile.of(__file__)

# Advisory lock keys of this project: (NAMESPACE, key). The migration lock uses the one-key
# form, which PostgreSQL keeps apart from the two-key form.
NAMESPACE = 7_361_201

Scope = Literal["populations", "offers"]


@dataclass(frozen=True)
class DrainKind:
    name: Literal["sync", "reconcile"]
    table: str  # the pending rows
    task_name: str  # the job that drains them
    queue: str
    scope: Scope  # which scope rows of qlarius_target_locks a batch must find free
    batch_key: int


SYNC = DrainKind(
    name="sync",
    table="qlarius_pending_syncs",
    task_name="sync_pending_me_files",
    queue="targets",
    scope="populations",
    batch_key=11,
)
RECONCILE = DrainKind(
    name="reconcile",
    table="qlarius_pending_reconciles",
    task_name="reconcile_pending_offers",
    queue="offers",
    scope="offers",
    batch_key=12,
)
KINDS = {kind.name: kind for kind in (SYNC, RECONCILE)}


@dataclass(frozen=True)
class Claimed:
    """The pending rows a batch took, and what they ask for."""

    rows: list[dict[str, Any]]
    free_targets: list[int]

    @property
    def me_file_ids(self) -> list[int]:
        """The MeFiles to work on."""
        return sorted({r["me_file_id"] for r in self.rows})

    def earliest(self, me_file_ids: set[int] | None = None) -> tuple[list[int], list[Any]]:
        """(MeFile ids, their earliest recorded_at), for the rows about every target."""
        first: dict[int, Any] = {}
        for r in self.rows:
            if r["target_id"] is None and (me_file_ids is None or r["me_file_id"] in me_file_ids):
                at = first.get(r["me_file_id"])
                first[r["me_file_id"]] = (
                    r["recorded_at"] if at is None else min(at, r["recorded_at"])
                )
        ids = sorted(first)
        return ids, [first[i] for i in ids]


@dataclass
class BatchOutcome:
    """What a kind's apply step did with a claimed batch."""

    counts: dict[str, int] = field(default_factory=dict)
    # MeFiles the batch could not finish (a row locked elsewhere), put back for later
    left_for_later: set[int] = field(default_factory=set)


ApplyBatch = Callable[[AsyncConnection, Claimed], Awaitable[BatchOutcome]]


@dataclass
class DrainReport:
    drainer: bool = False  # whether this job drained (else another drainer was active)
    batches: int = 0
    rows: int = 0
    me_files: int = 0
    deferred: int = 0  # (me_file, target) rows left for a busy target
    left_for_later: int = 0
    max_lag_ms: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    budget_spent: bool = False

    def add(self, claimed: Claimed, outcome: BatchOutcome, deferred: int, lag: int) -> None:
        self.batches += 1
        self.rows += len(claimed.rows)
        self.me_files += len(claimed.me_file_ids) - len(outcome.left_for_later)
        self.deferred += deferred
        self.left_for_later += len(outcome.left_for_later)
        self.max_lag_ms = max(self.max_lag_ms, lag)
        for key, value in outcome.counts.items():
            self.counts[key] = self.counts.get(key, 0) + value

    def summary(self) -> dict[str, Any]:
        return {
            "drainer": self.drainer,
            "batches": self.batches,
            "rows": self.rows,
            "me_files": self.me_files,
            "deferred": self.deferred,
            "left_for_later": self.left_for_later,
            "max_lag_ms": self.max_lag_ms,
            "budget_spent": self.budget_spent,
            **self.counts,
        }


class LeaseLost(RuntimeError):
    """This drainer's lease lapsed and another drainer took it: this one stops."""


@dataclass(frozen=True)
class Lease:
    """The drainer's lease of ``kind``: one row of ``qlarius_drain_leases``, no session state
    (a transaction pooler may run each of these statements on another server session)."""

    kind: DrainKind
    holder: str
    seconds: float

    async def acquire(self, conn: AsyncConnection) -> bool:
        async with conn.transaction():
            row = await SQL.one(
                conn,
                "acquire_drain_lease",
                kind=self.kind.name,
                holder=self.holder,
                seconds=self.seconds,
            )
        return row is not None

    async def renew(self, conn: AsyncConnection) -> None:
        """In the caller's (a batch's) transaction: visible when that batch commits."""
        row = await SQL.one(
            conn,
            "renew_drain_lease",
            kind=self.kind.name,
            holder=self.holder,
            seconds=self.seconds,
        )
        if row is None:
            raise LeaseLost(f"the {self.kind.name} drainer lease of {self.holder} lapsed")

    async def release(self, conn: AsyncConnection) -> None:
        async with conn.transaction():
            await SQL.execute(conn, "release_drain_lease", kind=self.kind.name, holder=self.holder)


@contextlib.asynccontextmanager
async def _session_lock_released(conn: AsyncConnection, key: int) -> AsyncIterator[None]:
    """The batch barrier, a session lock taken and released inside the caller's transaction
    (so on the one server session a pooler gives that transaction). Released when leaving,
    whatever happens; if the release fails, the connection is closed, so the lock dies with
    its session and the pool never hands it out."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            await _release_or_close(conn, key)
        raise
    await _release_or_close(conn, key)


async def _release_or_close(conn: AsyncConnection, key: int) -> None:
    try:
        async with conn.transaction():
            row = await SQL.one(conn, "advisory_unlock", namespace=NAMESPACE, key=key)
        if not (row and row["unlocked"]):
            raise RuntimeError(f"the batch barrier ({NAMESPACE}, {key}) was not held")
    except BaseException:
        with contextlib.suppress(Exception):
            await conn.close()
        raise


async def _run_batch(
    conn: AsyncConnection, lease: Lease, apply: ApplyBatch, batch_size: int, report: DrainReport
) -> int:
    """One batch in one transaction, the lease renewed in it; returns the number of pending
    rows taken (0: none)."""
    kind = lease.kind
    async with conn.transaction():
        await SQL.execute(conn, "advisory_xact_lock", namespace=NAMESPACE, key=kind.batch_key)
        await lease.renew(conn)
        free = [
            r["target_id"] for r in await SQL.many(conn, "free_target_scopes", scope=kind.scope)
        ]
        rows = await SQL.many(
            conn,
            "claim_pending",
            tables={"table": kind.table},
            free_targets=free,
            batch_size=batch_size,
        )
        if not rows:
            return 0
        claimed = Claimed(rows=rows, free_targets=free)
        outcome = await apply(conn, claimed)
        if outcome.left_for_later:
            ids, since = claimed.earliest(outcome.left_for_later)
            # MeFiles whose only rows were for one target: put back as rows about every target
            missing = sorted(outcome.left_for_later - set(ids))
            if missing:
                ids += missing
                since += [
                    min(r["recorded_at"] for r in rows if r["me_file_id"] == m) for m in missing
                ]
            await requeue_pending(conn, kind, ids, since)
        deferred_ids, deferred_since = claimed.earliest(set(claimed.me_file_ids))
        done = await SQL.one(
            conn,
            "finish_drain_batch",
            tables={"table": kind.table},
            kind=kind.name,
            free_targets=free,
            deferred_me_file_ids=deferred_ids,
            deferred_recorded_at=deferred_since,
            recorded_at=[
                r["recorded_at"] for r in rows if r["me_file_id"] not in outcome.left_for_later
            ],
        )
    assert done is not None
    report.add(claimed, outcome, int(done["deferred"]), int(done["max_lag_ms"] or 0))
    return len(rows)


async def has_processable(conn: AsyncConnection, kind: DrainKind) -> bool:
    async with conn.transaction():
        row = await SQL.one(
            conn, "has_processable_pending", tables={"table": kind.table}, scope=kind.scope
        )
    return bool(row and row["pending"])


async def drain(
    conn: AsyncConnection,
    kind: DrainKind,
    apply: ApplyBatch,
    *,
    batch_size: int,
    budget_seconds: float,
    lease_seconds: float | None = None,
) -> DrainReport:
    """Drain ``kind`` until nothing is left that can be taken now, or the time budget is spent
    (then a successor job is left waiting). Returns at once when another drainer holds the
    lease. Each step is a transaction of its own: ``conn`` may be a pooled connection whose
    transactions run on different server sessions."""
    report = DrainReport()
    deadline = time.monotonic() + budget_seconds
    if lease_seconds is None:
        lease_seconds = get_settings().drain_lease_seconds
    lease = Lease(kind, f"{uuid.uuid4()}", lease_seconds)
    while True:
        if not await lease.acquire(conn):
            return report  # the active drainer checks for work after it lets go
        report.drainer = True
        try:
            async with conn.transaction():
                await SQL.count(conn, "drop_rows_of_gone_targets", tables={"table": kind.table})
            while time.monotonic() < deadline:
                if not await _run_batch(conn, lease, apply, batch_size, report):
                    break
        except LeaseLost:
            log.warning(
                f"{kind.name} drainer lease lapsed during a batch; the new holder drains",
                lease_seconds=lease_seconds,
            )
            return report
        except BaseException:
            with contextlib.suppress(Exception):
                await lease.release(conn)  # else it lapses on its own
            raise
        await lease.release(conn)
        if time.monotonic() >= deadline:
            report.budget_spent = True
            await ensure_waiting_job(conn, kind)
            return report
        # Released: anything committed from here on is either seen by this check or woke a
        # job that will find the lease free.
        if not await has_processable(conn, kind):
            return report


async def ensure_waiting_job(conn: AsyncConnection, kind: DrainKind) -> int | None:
    """Defer ``kind``'s drain job unless one is already waiting, or a drainer holds a live
    lease: it rechecks for work after letting go of it, so a job now would only find the
    lease taken. A quiet no-op (None) then."""
    async with conn.transaction():
        row = await SQL.one(
            conn,
            "ensure_waiting_job",
            queue=kind.queue,
            task_name=kind.task_name,
            kind=kind.name,
        )
    return row["id"] if row else None


async def record_pending(conn: AsyncConnection, kind: DrainKind, me_file_id: int) -> bool:
    """Record pending work of ``kind`` for one MeFile (applied after the caller commits);
    False when the MeFile does not exist."""
    return (
        await SQL.one(conn, "record_pending", tables={"table": kind.table}, me_file_id=me_file_id)
        is not None
    )


async def record_pending_many(
    conn: AsyncConnection, kind: DrainKind, me_file_ids: list[int]
) -> int:
    """The same for many MeFiles at once (those that exist); returns the rows recorded."""
    return await SQL.count(
        conn, "record_pending_many", tables={"table": kind.table}, me_file_ids=me_file_ids
    )


async def requeue_pending(
    conn: AsyncConnection,
    kind: DrainKind,
    me_file_ids: list[int],
    recorded_at: list[Any],
    *,
    retry_seconds: float = 2,
) -> None:
    """Put MeFiles a batch could not finish back as pending, due after ``retry_seconds``,
    keeping when their change was first recorded (the lag histogram counts from then)."""
    await SQL.execute(
        conn,
        "requeue_pending",
        tables={"table": kind.table},
        me_file_ids=me_file_ids,
        recorded_at=recorded_at,
        retry_seconds=retry_seconds,
    )


async def wake_drains(conn: AsyncConnection, kind: DrainKind) -> None:
    """Wake ``kind``'s drains when the caller commits (a scope job that left work waiting)."""
    await SQL.execute(conn, "wake_drains", kind=kind.name)


async def ensure_target_locks(conn: AsyncConnection, target_id: int | None = None) -> int:
    """Create missing scope rows (of one target, or all). The caller commits before taking
    one: a row that drains cannot see yet protects nothing. Returns the rows created."""
    return await SQL.count(conn, "ensure_target_locks", target_id=target_id)


ScopeState = Literal["locked", "gone", "busy"]


@contextlib.asynccontextmanager
async def scope_locked(
    conn: AsyncConnection, kind: DrainKind, target_id: int
) -> AsyncIterator[ScopeState]:
    """Take ``target_id``'s scope for the rest of ``conn``'s current transaction. Its
    statements from then on see every batch before (READ COMMITTED, which the app's pool
    enforces: each statement takes a new snapshot). Yields ``"locked"``, ``"gone"`` (no such
    target) or ``"busy"`` (the target, or one of its bands or, for offers, its campaigns and
    media runs, is being deleted, or it has no scope row yet: nothing was waited for, the
    caller leaves its work for later).

    Lock order, the same in every job: the targets row first (FOR KEY SHARE SKIP LOCKED: the
    target cannot be deleted meanwhile, its status can be updated, and one being deleted right
    now is not waited for), then the batch barrier, then the scope row. The barrier is passed
    between two batches of ``kind``: a heavyweight lock, queued fairly ahead of later batches,
    held only while taking the scope row that no batch holds at that moment. From then on
    batches skip this target. The scope row must exist and be committed
    (``ensure_target_locks``). Last, the target's parts (``qlarius_lock_target_parts``), FOR
    KEY SHARE SKIP LOCKED like its row.
    """
    if conn.info.transaction_status != TransactionStatus.INTRANS:
        # the barrier's lock and unlock must run on one server session: in one transaction
        raise RuntimeError("scope_locked needs an open transaction on its connection")
    if await SQL.one(conn, "lock_target_row", target_id=target_id) is None:
        exists = await SQL.one(conn, "target_exists", target_id=target_id)
        yield "busy" if exists and exists["present"] else "gone"
        return
    async with _session_lock_released(conn, kind.batch_key):
        await SQL.execute(conn, "advisory_lock", namespace=NAMESPACE, key=kind.batch_key)
        row = await SQL.one(conn, "try_lock_target_scope", target_id=target_id, scope=kind.scope)
    if row is None:
        # Not held by a batch (the barrier excludes them), so held by another scope job of
        # this target or a sweep's brief check: wait for it like any row lock.
        row = await SQL.one(conn, "lock_target_scope", target_id=target_id, scope=kind.scope)
    if row is None:
        yield "busy"
        return
    parts = await SQL.one(conn, "lock_target_parts", target_id=target_id, scope=kind.scope)
    yield "locked" if parts and parts["free"] else "busy"
