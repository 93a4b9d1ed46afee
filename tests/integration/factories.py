"""Builders for test data: traits, groups, targets with bands, MeFiles with tags, campaigns."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


@dataclass
class World:
    """A small marketplace built through one sync connection."""

    conn: psycopg.Connection
    _next_order: int = 0
    traits: dict[str, int] = field(default_factory=dict)

    def one(self, query: str, params: Sequence[Any] = ()) -> Any:
        row = self.conn.execute(query, params).fetchone()
        return row[0] if row else None

    def parent(self, name: str, display_order: int | None = None) -> int:
        self._next_order += 1
        order = self._next_order if display_order is None else display_order
        trait_id = self.one(
            "INSERT INTO traits (trait_name, display_order) VALUES (%s, %s) RETURNING id",
            (name, order),
        )
        self.traits[name] = trait_id
        return trait_id

    def child(
        self, parent_id: int, name: str, display_order: int = 1, trait_id: int | None = None
    ) -> int:
        if trait_id is None:
            trait_id = self.one(
                "INSERT INTO traits (trait_name, display_order, parent_trait_id) "
                "VALUES (%s, %s, %s) RETURNING id",
                (name, display_order, parent_id),
            )
        else:
            self.conn.execute(
                "INSERT INTO traits (id, trait_name, display_order, parent_trait_id) "
                "VALUES (%s, %s, %s, %s)",
                (trait_id, name, display_order, parent_id),
            )
        self.traits[name] = trait_id
        return trait_id

    def group(self, title: str, parent_id: int, trait_ids: Iterable[int]) -> int:
        group_id = self.one(
            "INSERT INTO trait_groups (title, parent_trait_id) VALUES (%s, %s) RETURNING id",
            (title, parent_id),
        )
        for trait_id in trait_ids:
            self.conn.execute(
                "INSERT INTO trait_group_traits (trait_group_id, trait_id) VALUES (%s, %s)",
                (group_id, trait_id),
            )
        return group_id

    def target(self, title: str = "target", status: str = "not_populated") -> int:
        return self.one(
            "INSERT INTO targets (title, population_status) VALUES (%s, %s) RETURNING id",
            (title, status),
        )

    def band(self, target_id: int, group_ids: Iterable[int], bullseye: bool = False) -> int:
        band_id = self.one(
            "INSERT INTO target_bands (target_id, is_bullseye) VALUES (%s, %s) RETURNING id",
            (target_id, bullseye),
        )
        for group_id in group_ids:
            self.conn.execute(
                "INSERT INTO target_band_trait_groups (target_band_id, trait_group_id) "
                "VALUES (%s, %s)",
                (band_id, group_id),
            )
        return band_id

    def nested_bands(self, target_id: int, group_ids: Sequence[int]) -> list[int]:
        """Bullseye with every group, then each outer ring one group fewer; innermost first."""
        return [
            self.band(target_id, group_ids[: len(group_ids) - i], bullseye=(i == 0))
            for i in range(len(group_ids))
        ]

    def me_file(self, tags: dict[int, str | None] | Iterable[int] = ()) -> int:
        me_file_id = self.one("INSERT INTO me_files DEFAULT VALUES RETURNING id")
        self.tag(me_file_id, tags)
        return me_file_id

    def tag(self, me_file_id: int, tags: dict[int, str | None] | Iterable[int]) -> None:
        items = tags.items() if isinstance(tags, dict) else ((t, None) for t in tags)
        for trait_id, value in items:
            self.conn.execute(
                "INSERT INTO me_file_tags (me_file_id, trait_id, tag_value) VALUES (%s, %s, %s) "
                "ON CONFLICT (me_file_id, trait_id) DO UPDATE SET tag_value = EXCLUDED.tag_value",
                (me_file_id, trait_id, value),
            )

    def untag(self, me_file_id: int, trait_ids: Iterable[int]) -> None:
        self.conn.execute(
            "DELETE FROM me_file_tags WHERE me_file_id = %s AND trait_id = ANY(%s)",
            (me_file_id, list(trait_ids)),
        )

    def campaign(
        self,
        target_id: int,
        bids: dict[int, tuple[str, str]] | None = None,
        launched: bool = True,
        deactivated: bool = False,
        media_runs: int = 1,
    ) -> int:
        campaign_id = self.one(
            "INSERT INTO campaigns (target_id, title, launched_at, deactivated_at) VALUES "
            "(%s, 'campaign', CASE WHEN %s THEN now() - interval '1 minute' END, "
            "CASE WHEN %s THEN now() END) RETURNING id",
            (target_id, launched, deactivated),
        )
        for _ in range(media_runs):
            self.conn.execute("INSERT INTO media_runs (campaign_id) VALUES (%s)", (campaign_id,))
        for band_id, (offer_amt, cost_amt) in (bids or {}).items():
            self.conn.execute(
                "INSERT INTO bids (campaign_id, target_band_id, offer_amt, marketer_cost_amt) "
                "VALUES (%s, %s, %s, %s)",
                (campaign_id, band_id, Decimal(offer_amt), Decimal(cost_amt)),
            )
        return campaign_id

    def legacy_populations(
        self, band_id: int, me_file_ids: Iterable[int], kept: dict[int, str] | None = None
    ) -> None:
        """Population rows as the old asynchronous path left them: snapshot NULL, except the
        ``kept`` ones ({me_file_id: hand-written tags value})."""
        for me_file_id in me_file_ids:
            self.conn.execute(
                "INSERT INTO target_populations (target_band_id, me_file_id, matching_tags_snapshot) "
                "VALUES (%s, %s, %s)",
                (
                    band_id,
                    me_file_id,
                    None if me_file_id not in (kept or {}) else Jsonb({"tags": kept[me_file_id]}),
                ),
            )

    def populations(self, target_id: int | None = None) -> dict[int, int]:
        """{me_file_id: band_id} (of one target when given)."""
        rows = self.conn.execute(
            "SELECT tp.me_file_id, tp.target_band_id FROM target_populations tp "
            "JOIN target_bands b ON b.id = tp.target_band_id "
            "WHERE %s::bigint IS NULL OR b.target_id = %s ORDER BY tp.me_file_id",
            (target_id, target_id),
        ).fetchall()
        return {m: b for m, b in rows}

    def snapshots(self, table: str = "target_populations") -> dict[int, Any]:
        rows = self.conn.execute(
            psycopg.sql.SQL("SELECT id, matching_tags_snapshot FROM {} ORDER BY id").format(
                psycopg.sql.Identifier(table)
            )
        ).fetchall()
        return dict(rows)

    def count(self, query: str, params: Sequence[Any] = ()) -> int:
        return int(self.one(query, params))


@dataclass(frozen=True)
class StandardWorld:
    """The standard data set: sex, zip and home properties (parents ``sex``, ``zip``,
    ``props`` and their tags), one group over each (``g_sex``, ``g_zip``, ``g_props``), and a
    target with three nested bands (``bullseye`` inside ``middle`` inside ``outer``). Ids."""

    w: World
    target: int
    bullseye: int
    middle: int
    outer: int
    female: int
    male: int
    z10028: int
    z10001: int
    heat: int
    story: int
    sex: int
    zip: int
    props: int
    g_sex: int
    g_zip: int
    g_props: int


def standard_world(conn: psycopg.Connection) -> StandardWorld:
    """Sex, zip and home properties; a target with three nested bands over three groups."""
    w = World(conn)
    sex = w.parent("Sex (Biological)", 1)
    female = w.child(sex, "Female", 1)
    male = w.child(sex, "Male", 2)
    zipcode = w.parent("Home Zip Code", 3)
    z10028 = w.child(zipcode, "10028", 10028)
    z10001 = w.child(zipcode, "10001", 10001)
    props = w.parent("Home Properties", 7)
    heat = w.child(props, "Central Heat/AC", 2)
    story = w.child(props, "Multi-story", 5)
    g_sex = w.group("women", sex, [female])
    g_zip = w.group("zips", zipcode, [z10028, z10001])
    g_props = w.group("props", props, [heat, story])
    target = w.target("NYC women with homes")
    bullseye, middle, outer = w.nested_bands(target, [g_sex, g_zip, g_props])
    return StandardWorld(
        w=w,
        target=target,
        bullseye=bullseye,
        middle=middle,
        outer=outer,
        female=female,
        male=male,
        z10028=z10028,
        z10001=z10001,
        heat=heat,
        story=story,
        sex=sex,
        zip=zipcode,
        props=props,
        g_sex=g_sex,
        g_zip=g_zip,
        g_props=g_props,
    )
