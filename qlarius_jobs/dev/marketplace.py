"""The storm's application: what the marketplace does to the database while the jobs run.

Every kind of change DOMAIN.md calls an input of the rules: tags (with their notify),
re-populations, bids (added, dropped, amounts changed), campaign offers, deactivations and
re-activations, campaigns moved to another target, band criteria (a trait added to or removed
from a group), traits renamed and reordered, MeFiles deleted, ad events and backfills. None of
them but the tags' notify calls anything: the rest must reach the data on their own.

A change the database refuses because another one removed what it refers to (a tag for a
MeFile deleted meanwhile, an ad event on an offer withdrawn meanwhile) is what a real
application meets too: counted as refused, not as an error.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from qlarius_jobs import api
from qlarius_jobs.api import record_ad_event
from qlarius_jobs.jobs.catalog import defer_job

Step = Callable[[psycopg.AsyncConnection], Awaitable[bool]]


@dataclass
class World:
    me_files: list[int]
    traits: list[int]  # child traits that some trait group uses (changes that matter)
    other_traits: list[int]
    targets: list[int]
    campaigns: list[int]
    bands_by_target: dict[int, list[int]]
    groups: dict[int, list[int]]  # trait groups the bands use -> their parent's children
    parents: list[int]

    @classmethod
    def load(cls, conn: psycopg.Connection) -> World:
        me_files = [r[0] for r in conn.execute("SELECT id FROM me_files ORDER BY id")]
        grouped = {r[0] for r in conn.execute("SELECT DISTINCT trait_id FROM trait_group_traits")}
        children = [
            r[0] for r in conn.execute("SELECT id FROM traits WHERE parent_trait_id IS NOT NULL")
        ]
        targets = [r[0] for r in conn.execute("SELECT id FROM targets ORDER BY id")]
        campaigns = [r[0] for r in conn.execute("SELECT id FROM campaigns ORDER BY id")]
        bands: dict[int, list[int]] = {}
        for band, target in conn.execute("SELECT id, target_id FROM target_bands ORDER BY id"):
            bands.setdefault(target, []).append(band)
        groups = {
            group: list(kids)
            for group, kids in conn.execute(
                "SELECT g.id, array_agg(t.id ORDER BY t.id) FROM trait_groups g "
                "JOIN traits t ON t.parent_trait_id = g.parent_trait_id "
                "WHERE g.id IN (SELECT trait_group_id FROM target_band_trait_groups) "
                "GROUP BY g.id ORDER BY g.id"
            )
        }
        parents = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT g.parent_trait_id FROM trait_groups g ORDER BY 1"
            )
        ]
        return cls(
            me_files=me_files,
            traits=sorted(grouped),
            other_traits=[t for t in children if t not in grouped],
            targets=targets,
            campaigns=campaigns,
            bands_by_target=bands,
            groups=groups,
            parents=parents,
        )


class Application:
    """What the marketplace does to the database while the jobs run."""

    def __init__(
        self, conninfo: str, world: World, deadline: float, rng: random.Random, changers: int
    ) -> None:
        self.conninfo = conninfo
        self.changers = changers
        self.world = world
        self.deadline = deadline
        self.rng = rng
        self.counts: dict[str, int] = {}
        self.errors: list[str] = []

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    async def _loop(self, what: str, pause: tuple[float, float], step: Step) -> None:
        # prepare_threshold None: what an application behind a transaction pooler must set
        async with await psycopg.AsyncConnection.connect(
            self.conninfo, prepare_threshold=None
        ) as conn:
            while time.monotonic() < self.deadline:
                try:
                    if await step(conn):
                        self._count(what)
                    await conn.commit()
                except (LookupError, psycopg.errors.ForeignKeyViolation):
                    await conn.rollback()
                    self._count(f"{what} refused")
                except psycopg.Error as exc:
                    await conn.rollback()
                    self.errors.append(f"{what}: {type(exc).__name__}: {str(exc).strip()[:200]}")
                await asyncio.sleep(self.rng.uniform(*pause))

    async def _rows(
        self, conn: psycopg.AsyncConnection, query: str, params: tuple[Any, ...] = ()
    ) -> list[tuple[Any, ...]]:
        cur = await conn.execute(query, params)
        return list(await cur.fetchall())

    # --- tags and populations -------------------------------------------------------------

    async def change_tags(self, conn: psycopg.AsyncConnection) -> bool:
        me_file = self.rng.choice(self.world.me_files)
        current = [
            r[0]
            for r in await self._rows(
                conn, "SELECT trait_id FROM me_file_tags WHERE me_file_id = %s", (me_file,)
            )
        ]
        for _ in range(self.rng.randint(1, 3)):
            op = self.rng.random()
            if op < 0.45 or not current:
                pool = self.world.traits if self.rng.random() < 0.9 else self.world.other_traits
                await conn.execute(
                    "INSERT INTO me_file_tags (me_file_id, trait_id, tag_value) "
                    "VALUES (%s, %s, %s) ON CONFLICT (me_file_id, trait_id) "
                    "DO UPDATE SET tag_value = EXCLUDED.tag_value, updated_at = now()",
                    (me_file, self.rng.choice(pool), self.rng.choice([None, "", "v1", "v2"])),
                )
            elif op < 0.85:
                await conn.execute(
                    "DELETE FROM me_file_tags WHERE me_file_id = %s AND trait_id = %s",
                    (me_file, self.rng.choice(current)),
                )
            else:
                await conn.execute(
                    "UPDATE me_file_tags SET tag_value = %s, updated_at = now() "
                    "WHERE me_file_id = %s AND trait_id = %s",
                    (self.rng.choice(["x", "y", None]), me_file, self.rng.choice(current)),
                )
        await api.notify_tags_changed(conn, me_file)
        return True

    async def repopulate(self, conn: psycopg.AsyncConnection) -> bool:
        await api.trigger_population(conn, self.rng.choice(self.world.targets))
        return True

    async def delete_me_file(self, conn: psycopg.AsyncConnection) -> bool:
        """A person leaves: their MeFile goes, with its tags, populations and offers (their
        ad events are history: such MeFiles are kept)."""
        if len(self.world.me_files) < 10:
            return False
        me_file = self.rng.choice(self.world.me_files)
        cur = await conn.execute(
            "DELETE FROM me_files m WHERE m.id = %s "
            "AND NOT EXISTS (SELECT 1 FROM ad_events e WHERE e.me_file_id = m.id)",
            (me_file,),
        )
        if cur.rowcount:
            self.world.me_files.remove(me_file)
        return cur.rowcount > 0

    # --- criteria and traits ----------------------------------------------------------------

    async def edit_criteria(self, conn: psycopg.AsyncConnection) -> bool:
        """A marketer adds an answer to a trait group a band uses, or removes one (never the
        last: a group stays satisfiable)."""
        group = self.rng.choice(sorted(self.world.groups))
        inside = [
            r[0]
            for r in await self._rows(
                conn, "SELECT trait_id FROM trait_group_traits WHERE trait_group_id = %s", (group,)
            )
        ]
        outside = [t for t in self.world.groups[group] if t not in inside]
        if outside and (len(inside) < 2 or self.rng.random() < 0.5):
            await conn.execute(
                "INSERT INTO trait_group_traits (trait_group_id, trait_id) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING",
                (group, self.rng.choice(outside)),
            )
        elif len(inside) > 1:
            await conn.execute(
                "DELETE FROM trait_group_traits WHERE trait_group_id = %s AND trait_id = %s",
                (group, self.rng.choice(inside)),
            )
        else:
            return False
        return True

    async def rename_trait(self, conn: psycopg.AsyncConnection) -> bool:
        """An editor renames or reorders an answer, or a question (its name and order are in
        every snapshot entry of its answers)."""
        trait = self.rng.choice(
            self.world.traits if self.rng.random() < 0.7 else self.world.parents
        )
        await conn.execute(
            "UPDATE traits SET trait_name = %s, display_order = %s WHERE id = %s",
            (f"trait {trait} r{self.rng.randint(1, 99)}", self.rng.randint(1, 30), trait),
        )
        return True

    # --- campaigns and bids -----------------------------------------------------------------

    async def offer(self, conn: psycopg.AsyncConnection) -> bool:
        campaign = self.rng.choice(self.world.campaigns)
        if self.rng.random() < 0.3:  # the marketer changes a bid: offers must follow
            bids = await self._rows(
                conn,
                "SELECT b.id, c.target_id FROM bids b "
                "JOIN campaigns c ON c.id = b.campaign_id WHERE b.campaign_id = %s",
                (campaign,),
            )
            if len(bids) > 1 and self.rng.random() < 0.5:
                await conn.execute("DELETE FROM bids WHERE id = %s", (self.rng.choice(bids)[0],))
            elif bids:
                bands = self.world.bands_by_target.get(bids[0][1], [])
                await conn.execute(
                    "INSERT INTO bids (campaign_id, target_band_id, offer_amt, marketer_cost_amt) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (campaign_id, target_band_id) "
                    "DO UPDATE SET offer_amt = EXCLUDED.offer_amt",
                    (campaign, self.rng.choice(bands), self.rng.randint(1, 9), 10),
                )
        await api.offer_campaign(conn, campaign)
        return True

    async def change_amounts(self, conn: psycopg.AsyncConnection) -> bool:
        """A marketer raises or lowers a bid: open offers follow, completed ones keep theirs."""
        cur = await conn.execute(
            "UPDATE bids SET offer_amt = %s, marketer_cost_amt = %s "
            "WHERE id = (SELECT id FROM bids WHERE campaign_id = %s ORDER BY random() LIMIT 1)",
            (
                self.rng.randint(100, 900) / 100,
                self.rng.randint(900, 1500) / 100,
                self.rng.choice(self.world.campaigns),
            ),
        )
        return cur.rowcount > 0

    async def toggle_campaign(self, conn: psycopg.AsyncConnection) -> bool:
        """A campaign deactivated (its open offers withdrawn) or brought back."""
        await conn.execute(
            "UPDATE campaigns SET deactivated_at = CASE WHEN deactivated_at IS NULL "
            "THEN now() END WHERE id = %s",
            (self.rng.choice(self.world.campaigns),),
        )
        return True

    async def move_campaign(self, conn: psycopg.AsyncConnection) -> bool:
        """A campaign moved to another target, with bids on the new target's bands."""
        if len(self.world.targets) < 2:
            return False
        campaign = self.rng.choice(self.world.campaigns)
        target = self.rng.choice(self.world.targets)
        await conn.execute("UPDATE campaigns SET target_id = %s WHERE id = %s", (target, campaign))
        await conn.execute(
            "DELETE FROM bids b USING target_bands tb WHERE b.campaign_id = %s "
            "AND tb.id = b.target_band_id AND tb.target_id <> %s",
            (campaign, target),
        )
        for band in self.world.bands_by_target.get(target, []):
            if self.rng.random() < 0.8:
                await conn.execute(
                    "INSERT INTO bids (campaign_id, target_band_id, offer_amt, "
                    "marketer_cost_amt) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (campaign, band, self.rng.randint(1, 9), 10),
                )
        return True

    # --- people engaging, and the safety net ------------------------------------------------

    async def ad_event(self, conn: psycopg.AsyncConnection) -> bool:
        rows = await self._rows(
            conn,
            "SELECT id FROM offers WHERE id >= (SELECT min(id) + floor(random() * "
            "(max(id) - min(id) + 1)) FROM offers) ORDER BY id LIMIT 1",
        )
        if not rows:
            return False
        await record_ad_event(conn, rows[0][0], is_offer_complete=self.rng.random() < 0.3)
        return True

    async def backfill(self, conn: psycopg.AsyncConnection) -> bool:
        return await defer_job(conn, "backfill_missing_snapshots") is not None

    async def run(self) -> None:
        await asyncio.gather(
            *(
                self._loop("tag changes", (0.0, 0.02), self.change_tags)
                for _ in range(self.changers)
            ),
            # a marketer editing a target now and then (each target every half minute or so)
            self._loop("re-populations", (8.0, 15.0), self.repopulate),
            self._loop("campaign offers", (1.0, 3.0), self.offer),
            self._loop("bid amounts", (0.5, 2.0), self.change_amounts),
            self._loop("campaigns deactivated or back", (3.0, 6.0), self.toggle_campaign),
            self._loop("campaigns moved", (8.0, 15.0), self.move_campaign),
            self._loop("criteria edits", (2.0, 5.0), self.edit_criteria),
            self._loop("traits renamed", (2.0, 5.0), self.rename_trait),
            self._loop("MeFiles deleted", (0.5, 1.5), self.delete_me_file),
            self._loop("ad events", (0.02, 0.1), self.ad_event),
            self._loop("backfills", (5.0, 10.0), self.backfill),
        )
