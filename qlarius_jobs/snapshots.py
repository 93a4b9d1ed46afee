"""The one snapshot module: band matching and matching-tag snapshots, set-based.

The rules live in SQL: the view ``qlarius_band_memberships`` (innermost band per MeFile per
target; ``sql/migrations/0002_band_matching_and_snapshots.sql``) and the function
``qlarius_matching_tags_snapshots`` (the snapshot of a batch of (me_file, band) pairs; 0002,
rewritten by ``0009_snapshot_function_reads_tags_once.sql``). This
module is how Python reaches them; every task that writes a snapshot goes through it, and
every call handles a whole batch in one statement, never a query per row.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.logs import get_logger

log = get_logger(__name__)

SQL = QueryFile.of(__file__)

Snapshot = dict[str, Any]
Pair = tuple[int, int]  # (me_file_id, band_id)
CopyTable = Literal["offers", "ad_events"]
SnapshotTable = Literal["target_populations", "offers", "ad_events"]
# The tables whose rows carry a matching_tags_snapshot (DOMAIN.md), populations first: the
# copies take theirs from a population.
SNAPSHOT_TABLES: tuple[SnapshotTable, ...] = ("target_populations", "offers", "ad_events")


def _split(pairs: Iterable[Pair]) -> dict[str, list[int]]:
    me_file_ids: list[int] = []
    band_ids: list[int] = []
    for me_file_id, band_id in pairs:
        me_file_ids.append(me_file_id)
        band_ids.append(band_id)
    return {"me_file_ids": me_file_ids, "band_ids": band_ids}


async def compute_snapshots(conn: AsyncConnection, pairs: Iterable[Pair]) -> dict[Pair, Snapshot]:
    """The snapshot of every (me_file_id, band_id) pair; ``{"tags": []}`` when nothing matches."""
    rows = await SQL.many(conn, "snapshots_for_pairs", **_split(pairs))
    return {(r["me_file_id"], r["band_id"]): r["snapshot"] for r in rows}


@dataclass(frozen=True)
class PopulationChanges:
    deleted: int
    inserted: int
    refreshed: int
    members: int
    # MeFiles whose rows another transaction held (a MeFile being deleted, a row being
    # written): not waited for, left to the caller to record as pending work
    skipped: tuple[int, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.deleted or self.inserted or self.refreshed)

    def __add__(self, other: PopulationChanges) -> PopulationChanges:
        return PopulationChanges(
            deleted=self.deleted + other.deleted,
            inserted=self.inserted + other.inserted,
            refreshed=self.refreshed + other.refreshed,
            members=self.members + other.members,
            skipped=self.skipped + other.skipped,
        )


async def apply_band_memberships(
    conn: AsyncConnection,
    target_ids: Sequence[int],
    me_file_ids: Sequence[int] | None = None,
    *,
    id_range: tuple[int | None, int | None] = (None, None),
) -> PopulationChanges:
    """Make the targets' populations match band matching, snapshots inline, in one statement.

    ``me_file_ids=None`` means every MeFile (populating); a list narrows it (syncing), as does
    ``id_range`` (``[from, below)``, an end open when None). Rows held elsewhere are skipped,
    never waited for: ``skipped`` names their MeFiles.
    """
    row = await SQL.one(
        conn,
        "apply_band_memberships",
        target_ids=list(target_ids),
        me_file_ids=None if me_file_ids is None else list(me_file_ids),
        from_id=id_range[0],
        below_id=id_range[1],
    )
    assert row is not None
    return PopulationChanges(
        deleted=row["deleted"],
        inserted=row["inserted"],
        refreshed=row["refreshed"],
        members=row["members"],
        skipped=tuple(row["skipped_me_files"]),
    )


async def populate_in_ranges(
    conn: AsyncConnection, target_id: int, me_files_per_statement: int
) -> tuple[PopulationChanges, int]:
    """Every MeFile's population in the target, one statement per range of
    ``me_files_per_statement`` MeFiles, all in the caller's transaction; returns the changes
    and the number of statements. One statement over every MeFile sorts every tag of the
    target's traits at once: at 2M MeFiles, hundreds of megabytes spilled to disk per
    populate, and the cost per row grew with the data. A range keeps each step's sorts in
    memory, whatever the size. The ranges cover every id (the first and last are
    open-ended): a MeFile created meanwhile is in one of them, or left, like any change after
    its range was read, to a sync.
    """
    starts = await SQL.many(conn, "me_file_range_starts", size=me_files_per_statement)
    edges: list[int | None] = [None, *(r["id"] for r in starts), None]
    total = PopulationChanges(deleted=0, inserted=0, refreshed=0, members=0)
    for start, end in itertools.pairwise(edges):
        total += await apply_band_memberships(conn, [target_id], id_range=(start, end))
    return total, len(edges) - 1


async def fill_missing_population_snapshots(
    conn: AsyncConnection, population_ids: Sequence[int]
) -> list[int]:
    """Fill the NULL snapshots among ``population_ids``; never overwrites, never waits (a row
    being written elsewhere is skipped). Returns the ids really filled."""
    if not population_ids:
        return []
    rows = await SQL.many(conn, "fill_population_snapshots", population_ids=list(population_ids))
    return [r["id"] for r in rows]


@dataclass(frozen=True)
class CopyFill:
    updated: int
    populations_filled: int
    orphans: list[dict[str, int]]  # rows whose (me_file, band) has no population: still NULL


async def fill_missing_copied_snapshots(
    conn: AsyncConnection, table: CopyTable, ids: Sequence[int]
) -> CopyFill:
    """Fill NULL snapshots of offers or ad events from their (me_file, band) population.

    The population's own snapshot is filled first when it is NULL too, so a row is repaired
    whether or not its population was repaired before; when that population is being written
    by another job right now, the row gets the snapshot computed from the tags instead. Rows
    whose pair has no population stay NULL; each is logged (the seed note's
    ``No snapshot found for ...`` line) and returned.
    """
    if not ids:
        return CopyFill(0, 0, [])
    tables = {"table": table}
    ids = list(ids)
    populations_filled = len(
        await SQL.many(conn, "fill_populations_behind_copies", tables=tables, ids=ids)
    )
    # copied from the population, or computed when another job is writing that one right now
    row = await SQL.one(conn, "fill_copied_snapshots", tables=tables, ids=ids)
    assert row is not None
    updated, orphans = int(row["updated"]), list(row["orphans"])
    kind = "offer" if table == "offers" else "ad_event"
    for orphan in orphans:
        log.warning(
            f"No snapshot found for {kind} {orphan['id']} "
            f"(me_file: {orphan['me_file_id']}, band: {orphan['target_band_id']})",
            table=table,
            row_id=orphan["id"],
            me_file_id=orphan["me_file_id"],
            band_id=orphan["target_band_id"],
        )
    return CopyFill(updated, populations_filled, orphans)


async def give_offer_a_snapshot(conn: AsyncConnection, offer: dict[str, Any]) -> Snapshot:
    """The snapshot for an ``offer`` row whose own is NULL (an ad event is about to copy it):
    its population's, else computed from the MeFile's tags. Written to the offer unless a job
    is writing that offer right now (nothing waits), and logged."""
    row = await SQL.one(conn, "population_snapshot_of_offer", offer_id=offer["id"])
    snapshot = row["snapshot"] if row else None
    from_population = snapshot is not None
    if snapshot is None:
        pair = (offer["me_file_id"], offer["target_band_id"])
        snapshot = (await compute_snapshots(conn, [pair]))[pair]
    await SQL.execute(
        conn, "set_offer_snapshot_if_free", offer_id=offer["id"], snapshot=Jsonb(snapshot)
    )
    log.warning(
        f"offer {offer['id']} had no snapshot; computed it before recording the ad event",
        offer_id=offer["id"],
        from_population=from_population,
    )
    return snapshot
