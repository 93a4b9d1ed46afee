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

import psycopg

from qlarius_jobs import api
from qlarius_jobs.api import record_ad_event
from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs.catalog import defer_job

SQL = QueryFile.of(__file__)

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
        me_files = [r["id"] for r in SQL.many_sync(conn, "world_me_files")]
        grouped = {r["trait_id"] for r in SQL.many_sync(conn, "world_grouped_traits")}
        children = [r["id"] for r in SQL.many_sync(conn, "world_child_traits")]
        targets = [r["id"] for r in SQL.many_sync(conn, "world_targets")]
        campaigns = [r["id"] for r in SQL.many_sync(conn, "world_campaigns")]
        bands: dict[int, list[int]] = {}
        for r in SQL.many_sync(conn, "world_bands"):
            bands.setdefault(r["target_id"], []).append(r["id"])
        groups = {r["id"]: list(r["children"]) for r in SQL.many_sync(conn, "world_band_groups")}
        parents = [r["parent_trait_id"] for r in SQL.many_sync(conn, "world_parent_traits")]
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

    # --- tags and populations -------------------------------------------------------------

    async def change_tags(self, conn: psycopg.AsyncConnection) -> bool:
        me_file = self.rng.choice(self.world.me_files)
        await SQL.execute(conn, "hold_me_file_for_tag_changes", me_file_id=me_file)
        current = [
            r["trait_id"] for r in await SQL.many(conn, "tags_of_me_file", me_file_id=me_file)
        ]
        for _ in range(self.rng.randint(1, 3)):
            op = self.rng.random()
            if op < 0.45 or not current:
                pool = self.world.traits if self.rng.random() < 0.9 else self.world.other_traits
                # the draws happen in argument order: kept, so that a seed gives the same storm
                await SQL.execute(
                    conn,
                    "upsert_tag",
                    me_file_id=me_file,
                    trait_id=self.rng.choice(pool),
                    tag_value=self.rng.choice([None, "", "v1", "v2"]),
                )
            elif op < 0.85:
                await SQL.execute(
                    conn, "delete_tag", me_file_id=me_file, trait_id=self.rng.choice(current)
                )
            else:
                await SQL.execute(
                    conn,
                    "update_tag_value",
                    tag_value=self.rng.choice(["x", "y", None]),
                    me_file_id=me_file,
                    trait_id=self.rng.choice(current),
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
        deleted = await SQL.count(conn, "delete_me_file", me_file_id=me_file)
        if deleted:
            self.world.me_files.remove(me_file)
        return deleted > 0

    # --- criteria and traits ----------------------------------------------------------------

    async def edit_criteria(self, conn: psycopg.AsyncConnection) -> bool:
        """A marketer adds an answer to a trait group a band uses, or removes one (never the
        last: a group stays satisfiable)."""
        group = self.rng.choice(sorted(self.world.groups))
        inside = [r["trait_id"] for r in await SQL.many(conn, "traits_of_group", group_id=group)]
        outside = [t for t in self.world.groups[group] if t not in inside]
        if outside and (len(inside) < 2 or self.rng.random() < 0.5):
            await SQL.execute(
                conn, "add_trait_to_group", group_id=group, trait_id=self.rng.choice(outside)
            )
        elif len(inside) > 1:
            await SQL.execute(
                conn, "remove_trait_from_group", group_id=group, trait_id=self.rng.choice(inside)
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
        await SQL.execute(
            conn,
            "rename_trait",
            trait_name=f"trait {trait} r{self.rng.randint(1, 99)}",
            display_order=self.rng.randint(1, 30),
            trait_id=trait,
        )
        return True

    # --- campaigns and bids -----------------------------------------------------------------

    async def offer(self, conn: psycopg.AsyncConnection) -> bool:
        campaign = self.rng.choice(self.world.campaigns)
        if self.rng.random() < 0.3:  # the marketer changes a bid: offers must follow
            bids = await SQL.many(conn, "bids_of_campaign", campaign_id=campaign)
            if len(bids) > 1 and self.rng.random() < 0.5:
                await SQL.execute(conn, "delete_bid", bid_id=self.rng.choice(bids)["id"])
            elif bids:
                bands = self.world.bands_by_target.get(bids[0]["target_id"], [])
                await SQL.execute(
                    conn,
                    "upsert_bid",
                    campaign_id=campaign,
                    band_id=self.rng.choice(bands),
                    offer_amt=self.rng.randint(1, 9),
                    marketer_cost_amt=10,
                )
        await api.offer_campaign(conn, campaign)
        return True

    async def change_amounts(self, conn: psycopg.AsyncConnection) -> bool:
        """A marketer raises or lowers a bid: open offers follow, completed ones keep theirs."""
        changed = await SQL.count(
            conn,
            "change_bid_amounts",
            offer_amt=self.rng.randint(100, 900) / 100,
            marketer_cost_amt=self.rng.randint(900, 1500) / 100,
            campaign_id=self.rng.choice(self.world.campaigns),
        )
        return changed > 0

    async def toggle_campaign(self, conn: psycopg.AsyncConnection) -> bool:
        """A campaign deactivated (its open offers withdrawn) or brought back."""
        await SQL.execute(
            conn, "toggle_campaign", campaign_id=self.rng.choice(self.world.campaigns)
        )
        return True

    async def move_campaign(self, conn: psycopg.AsyncConnection) -> bool:
        """A campaign moved to another target, with bids on the new target's bands."""
        if len(self.world.targets) < 2:
            return False
        campaign = self.rng.choice(self.world.campaigns)
        target = self.rng.choice(self.world.targets)
        await SQL.execute(conn, "move_campaign", target_id=target, campaign_id=campaign)
        await SQL.execute(conn, "drop_bids_off_target", campaign_id=campaign, target_id=target)
        # A statement per bid, as an application adding bids one by one: each records the
        # campaign as pending (bids' statement-level trigger), which one INSERT for all would not.
        for band in self.world.bands_by_target.get(target, []):
            if self.rng.random() < 0.8:
                await SQL.execute(
                    conn,
                    "add_bid",
                    campaign_id=campaign,
                    band_id=band,
                    offer_amt=self.rng.randint(1, 9),
                    marketer_cost_amt=10,
                )
        return True

    # --- people engaging, and the safety net ------------------------------------------------

    async def ad_event(self, conn: psycopg.AsyncConnection) -> bool:
        offer = await SQL.one(conn, "random_offer")
        if offer is None:
            return False
        await record_ad_event(conn, offer["id"], is_offer_complete=self.rng.random() < 0.3)
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
