"""An independent reference of DOMAIN.md's rules, in plain Python, for checking invariants.

It reads the raw tables (no view, function or query of the jobs: its own reads, in
``reference.sql``), recomputes band memberships, snapshots and eligible offers, and compares
them with what the jobs wrote.
Slow on purpose (it is a second opinion, not a second implementation to optimise); fine for
the data sets of tests and storms (thousands of MeFiles).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg

from qlarius_jobs.db.queries import QueryFile

SQL = QueryFile.of(__file__)

Snapshot = dict[str, Any]


@dataclass
class Marketplace:
    trait: dict[int, tuple[str, int, int | None]]  # id -> (name, display_order, parent id)
    tags: dict[int, dict[int, str | None]]  # me_file -> {trait: tag_value}
    group_traits: dict[int, set[int]]  # trait group -> child traits
    band_groups: dict[int, list[int]]  # band -> trait groups
    band_target: dict[int, int]
    target_status: dict[int, str]
    campaigns: dict[int, dict[str, Any]]  # id -> target, live, first_run, bids {band: amounts}

    @classmethod
    def load(cls, conn: psycopg.Connection) -> Marketplace:
        trait = {
            r["id"]: (r["trait_name"], r["display_order"], r["parent_trait_id"])
            for r in SQL.many_sync(conn, "all_traits")
        }
        tags: dict[int, dict[int, str | None]] = defaultdict(dict)
        for r in SQL.many_sync(conn, "all_tags"):
            tags[r["me_file_id"]][r["trait_id"]] = r["tag_value"]
        for r in SQL.many_sync(conn, "all_me_files"):
            tags.setdefault(r["id"], {})
        group_traits: dict[int, set[int]] = defaultdict(set)
        for r in SQL.many_sync(conn, "all_trait_groups"):
            group_traits.setdefault(r["id"], set())
        for r in SQL.many_sync(conn, "all_group_traits"):
            group_traits[r["trait_group_id"]].add(r["trait_id"])
        band_target = {r["id"]: r["target_id"] for r in SQL.many_sync(conn, "all_bands")}
        band_groups: dict[int, list[int]] = {band: [] for band in band_target}
        for r in SQL.many_sync(conn, "all_band_groups"):
            band_groups[r["target_band_id"]].append(r["trait_group_id"])
        target_status = {
            r["id"]: r["population_status"] for r in SQL.many_sync(conn, "all_target_statuses")
        }
        campaigns: dict[int, dict[str, Any]] = {}
        for r in SQL.many_sync(conn, "all_campaigns"):
            campaigns[r["id"]] = {
                "target": r["target_id"],
                "live": r["live"],
                "first_run": None,
                "bids": {},
            }
        for r in SQL.many_sync(conn, "first_media_runs"):
            campaigns[r["campaign_id"]]["first_run"] = r["first_run"]
        for r in SQL.many_sync(conn, "all_bids"):
            campaigns[r["campaign_id"]]["bids"][r["target_band_id"]] = (
                r["offer_amt"],
                r["marketer_cost_amt"],
            )
        return cls(
            trait,
            dict(tags),
            dict(group_traits),
            band_groups,
            band_target,
            target_status,
            campaigns,
        )

    # --- the rules ----------------------------------------------------------------------

    def matches(self, me_file: int, band: int) -> bool:
        """AND across the band's groups, OR inside a group; no group or an empty one: no."""
        groups = self.band_groups.get(band, [])
        tagged = set(self.tags.get(me_file, {}))
        return bool(groups) and all(self.group_traits.get(g, set()) & tagged for g in groups)

    def band_of(self, me_file: int, target: int) -> int | None:
        """The innermost matching band: most groups, ties to the lowest band id."""
        candidates = [
            b for b, t in self.band_target.items() if t == target and self.matches(me_file, b)
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda b: (-len(self.band_groups[b]), b))

    def snapshot(self, me_file: int, band: int) -> Snapshot:
        band_traits = set().union(
            *(self.group_traits.get(g, set()) for g in self.band_groups[band])
        )
        parents: dict[int, list[list[Any]]] = defaultdict(list)
        for trait_id, value in self.tags.get(me_file, {}).items():
            if trait_id not in band_traits:
                continue
            name, order, parent = self.trait[trait_id]
            assert parent is not None, "a tag is always on a child trait"
            parents[parent].append([trait_id, value or name, order])
        entries = []
        for parent, children in parents.items():
            children.sort(key=lambda c: (c[2], c[0]))
            name, order, _ = self.trait[parent]
            entries.append([parent, name, order, children])
        entries.sort(key=lambda e: (e[2], e[0]))
        return {"tags": entries}

    def expected_populations(self, me_files: set[int] | None = None) -> dict[tuple[int, int], int]:
        """{(target, me_file): band} for every populated target."""
        expected = {}
        for target, status in self.target_status.items():
            if status != "populated":
                continue
            for me_file in me_files if me_files is not None else self.tags:
                band = self.band_of(me_file, target)
                if band is not None:
                    expected[(target, me_file)] = band
        return expected


@dataclass
class Violations:
    """How many rows break each invariant (all zero when the jobs have caught up)."""

    missing_populations: int = 0  # a MeFile in a populated target's band without its row
    extra_populations: int = 0  # a row that band matching does not explain
    stale_snapshots: int = 0  # a population whose snapshot is not the fresh computation
    missing_offers: int = 0  # an eligible (campaign, MeFile) without its offer
    extra_offers: int = 0  # an offer for a MeFile outside the bands its live campaign bids on
    wrong_offers: int = 0  # an offer on the wrong band/run or with another snapshot
    stale_amounts: int = 0  # an offer not yet completed without its bid's current amounts
    null_snapshot_copies: int = (
        0  # offers or ad events with a NULL snapshot that a population explains
    )
    examples: list[str] = field(default_factory=list)

    def total(self) -> int:
        return sum(v for k, v in vars(self).items() if isinstance(v, int))

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if isinstance(v, int)}

    def note(self, kind: str, text: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {text}")


def check(conn: psycopg.Connection, me_files: set[int] | None = None) -> Violations:
    """Compare populations, snapshots and offers (of ``me_files``, or all) with the rules."""
    world = Marketplace.load(conn)
    found = Violations()
    expected = world.expected_populations(me_files)
    actual: dict[tuple[int, int], list[tuple[int, Any]]] = defaultdict(list)
    snapshots: dict[tuple[int, int], Any] = {}
    for row in SQL.many_sync(conn, "all_populations"):
        band, me_file, snap = (
            row["target_band_id"],
            row["me_file_id"],
            row["matching_tags_snapshot"],
        )
        if me_files is not None and me_file not in me_files:
            continue
        target = world.band_target[band]
        if world.target_status.get(target) != "populated":
            continue
        actual[(target, me_file)].append((band, snap))
        snapshots[(me_file, band)] = snap
    for key, band in expected.items():
        rows = actual.get(key, [])
        if not any(b == band for b, _ in rows):
            found.note("missing_populations", f"target {key[0]} me_file {key[1]} band {band}")
    for key, rows in actual.items():
        for band, snap in rows:
            if expected.get(key) != band:
                found.note("extra_populations", f"target {key[0]} me_file {key[1]} band {band}")
            elif snap != world.snapshot(key[1], band):
                found.note("stale_snapshots", f"me_file {key[1]} band {band}: {snap}")

    offers: dict[tuple[int, int], list[tuple[int, int, Any]]] = defaultdict(list)
    amounts: dict[tuple[int, int], tuple[Any, Any, bool]] = {}  # (amounts, completed)
    for o in SQL.many_sync(conn, "all_offers"):
        cid, me_file = o["campaign_id"], o["me_file_id"]
        if me_files is None or me_file in me_files:
            offers[(cid, me_file)].append(
                (o["media_run_id"], o["target_band_id"], o["matching_tags_snapshot"])
            )
            amounts[(cid, me_file)] = (o["offer_amt"], o["marketer_cost_amt"], o["completed"])
    for cid, campaign in world.campaigns.items():
        if not campaign["live"]:
            # not live: only offers already completed stay (history)
            for ocid, me_file in offers:
                if ocid == cid and not amounts[(ocid, me_file)][2]:
                    found.note("extra_offers", f"campaign {cid} (not live) me_file {me_file}")
            continue
        if world.target_status.get(campaign["target"]) != "populated":
            continue
        for (target, me_file), band in expected.items():
            if target != campaign["target"] or band not in campaign["bids"]:
                continue
            rows = offers.get((cid, me_file), [])
            if not rows:
                found.note("missing_offers", f"campaign {cid} me_file {me_file} band {band}")
                continue
            run, offer_band, snap = rows[0]
            if len(rows) > 1 or (run, offer_band) != (campaign["first_run"], band):
                found.note("wrong_offers", f"campaign {cid} me_file {me_file}: {rows}")
            elif snap != world.snapshot(me_file, band):
                found.note("wrong_offers", f"campaign {cid} me_file {me_file}: snapshot {snap}")
            offer_amt, cost_amt, completed = amounts[(cid, me_file)]
            if not completed and (offer_amt, cost_amt) != campaign["bids"][band]:
                found.note(
                    "stale_amounts",
                    f"campaign {cid} me_file {me_file}: {offer_amt}/{cost_amt}, "
                    f"bid {campaign['bids'][band]}",
                )
        for (ocid, me_file), rows in offers.items():
            if ocid != cid:
                continue
            band = expected.get((campaign["target"], me_file))
            if band is None or band not in campaign["bids"]:
                found.note("extra_offers", f"campaign {cid} me_file {me_file}: {rows}")

    for table in ("offers", "ad_events"):
        for row in SQL.many_sync(conn, "null_snapshot_copies", tables={"table": table}):
            if me_files is None or row["me_file_id"] in me_files:
                found.note("null_snapshot_copies", f"{table} {row['id']}")
    return found
