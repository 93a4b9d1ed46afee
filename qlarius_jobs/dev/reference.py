"""An independent reference of DOMAIN.md's rules, in plain Python, for checking invariants.

It reads the raw tables (no view, function or query of this project), recomputes band
memberships, snapshots and eligible offers, and compares them with what the jobs wrote.
Slow on purpose (it is a second opinion, not a second implementation to optimise); fine for
the data sets of tests and storms (thousands of MeFiles).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

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
            r[0]: (r[1], r[2], r[3])
            for r in conn.execute(
                "SELECT id, trait_name, display_order, parent_trait_id FROM traits"
            )
        }
        tags: dict[int, dict[int, str | None]] = defaultdict(dict)
        for me_file, trait_id, value in conn.execute(
            "SELECT me_file_id, trait_id, tag_value FROM me_file_tags"
        ):
            tags[me_file][trait_id] = value
        for (me_file,) in conn.execute("SELECT id FROM me_files"):
            tags.setdefault(me_file, {})
        group_traits: dict[int, set[int]] = defaultdict(set)
        for (group_id,) in conn.execute("SELECT id FROM trait_groups"):
            group_traits.setdefault(group_id, set())
        for group_id, trait_id in conn.execute(
            "SELECT trait_group_id, trait_id FROM trait_group_traits"
        ):
            group_traits[group_id].add(trait_id)
        band_target = dict(conn.execute("SELECT id, target_id FROM target_bands").fetchall())
        band_groups: dict[int, list[int]] = {band: [] for band in band_target}
        for band, group_id in conn.execute(
            "SELECT target_band_id, trait_group_id FROM target_band_trait_groups"
        ):
            band_groups[band].append(group_id)
        target_status = dict(conn.execute("SELECT id, population_status FROM targets").fetchall())
        campaigns: dict[int, dict[str, Any]] = {}
        for cid, target, live in conn.execute(
            "SELECT id, target_id, launched_at IS NOT NULL AND launched_at <= now() "
            "AND deactivated_at IS NULL FROM campaigns"
        ):
            campaigns[cid] = {"target": target, "live": live, "first_run": None, "bids": {}}
        for cid, run in conn.execute("SELECT campaign_id, min(id) FROM media_runs GROUP BY 1"):
            campaigns[cid]["first_run"] = run
        for cid, band, offer_amt, cost_amt in conn.execute(
            "SELECT campaign_id, target_band_id, offer_amt, marketer_cost_amt FROM bids"
        ):
            campaigns[cid]["bids"][band] = (offer_amt, cost_amt)
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
    for band, me_file, snap in conn.execute(
        "SELECT target_band_id, me_file_id, matching_tags_snapshot FROM target_populations"
    ):
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
    for cid, me_file, run, band, snap, offer_amt, cost_amt, completed in conn.execute(
        "SELECT o.campaign_id, o.me_file_id, o.media_run_id, o.target_band_id, "
        "o.matching_tags_snapshot, o.offer_amt, o.marketer_cost_amt, "
        "EXISTS (SELECT 1 FROM ad_events e WHERE e.offer_id = o.id AND e.is_offer_complete) "
        "FROM offers o"
    ):
        if me_files is None or me_file in me_files:
            offers[(cid, me_file)].append((run, band, snap))
            amounts[(cid, me_file)] = (offer_amt, cost_amt, completed)
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
        query = sql.SQL(
            "SELECT c.id, c.me_file_id FROM {} c JOIN target_populations tp "
            "ON tp.me_file_id = c.me_file_id AND tp.target_band_id = c.target_band_id "
            "WHERE c.matching_tags_snapshot IS NULL"
        ).format(sql.Identifier(table))
        for row_id, me_file in conn.execute(query):
            if me_files is None or me_file in me_files:
                found.note("null_snapshot_copies", f"{table} {row_id}")
    return found
