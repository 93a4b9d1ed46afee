"""Band matching: AND across groups, OR inside a group, innermost band wins, ties by band id."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import AsyncConnection

from tests.integration.factories import World, standard_world


async def band_memberships(
    conn: AsyncConnection, target_ids: Sequence[int], me_file_ids: Sequence[int] | None = None
) -> dict[tuple[int, int], int]:
    """``{(target_id, me_file_id): band_id}`` as the view of the rules says (every MeFile, or
    only ``me_file_ids``)."""
    cur = await conn.execute(
        "SELECT target_id, me_file_id, band_id FROM qlarius_band_memberships "
        "WHERE target_id = ANY(%s) AND (%s::bigint[] IS NULL OR me_file_id = ANY(%s))",
        (list(target_ids), me_file_ids and list(me_file_ids), me_file_ids and list(me_file_ids)),
    )
    return {(t, m): b for t, m, b in await cur.fetchall()}


async def test_innermost_band_wins(conn, sync_conn):
    s = standard_world(sync_conn)
    w = s.w
    everything = w.me_file([s.female, s.z10028, s.story])
    two = w.me_file([s.female, s.z10001])
    one = w.me_file([s.female])
    none = w.me_file([s.male, s.z10028, s.heat])  # not female: fails every band
    members = await band_memberships(conn, [s.target])
    assert members == {
        (s.target, everything): s.bullseye,
        (s.target, two): s.middle,
        (s.target, one): s.outer,
    }
    assert (s.target, none) not in members


async def test_or_inside_a_group_and_across_groups(conn, sync_conn):
    s = standard_world(sync_conn)
    w = s.w
    a = w.me_file([s.female, s.z10001, s.heat])  # other zip and other property: still in
    b = w.me_file([s.female, s.heat])  # no zip: misses the middle ring's AND
    members = await band_memberships(conn, [s.target])
    assert members[(s.target, a)] == s.bullseye
    assert members[(s.target, b)] == s.outer


async def test_ties_go_to_the_lowest_band_id(conn, sync_conn):
    s = standard_world(sync_conn)
    w = s.w
    target = w.target("two equal bands")
    first = w.band(target, [s.g_sex, s.g_zip])
    second = w.band(target, [s.g_sex, s.g_props])
    me_file = w.me_file([s.female, s.z10028, s.heat])  # matches both, two groups each
    members = await band_memberships(conn, [target])
    assert members == {(target, me_file): first}
    assert first < second


async def test_empty_group_or_band_without_groups_matches_nobody(conn, sync_conn):
    s = standard_world(sync_conn)
    w = s.w
    target = w.target("degenerate")
    empty_group = w.group("nothing", s.sex, [])
    w.band(target, [s.g_sex, empty_group])
    w.band(target, [])
    w.me_file([s.female, s.male, s.z10028])
    assert await band_memberships(conn, [target]) == {}


async def test_matching_for_one_me_file_agrees_with_whole_target(conn, sync_conn):
    s = standard_world(sync_conn)
    w = s.w
    ids = [
        w.me_file(tags)
        for tags in (
            [s.female],
            [s.female, s.z10028],
            [s.male],
            [s.female, s.z10001, s.story],
        )
    ]
    whole = await band_memberships(conn, [s.target])
    for me_file in ids:
        one = await band_memberships(conn, [s.target], [me_file])
        assert one == {k: v for k, v in whole.items() if k[1] == me_file}


async def test_a_me_file_is_in_at_most_one_band_per_target(conn, sync_conn):
    w = World(sync_conn)
    p = w.parent("P")
    kids = [w.child(p, f"c{i}", i) for i in range(4)]
    groups = [w.group(f"g{i}", p, [k]) for i, k in enumerate(kids)]
    target = w.target()
    w.nested_bands(target, groups)
    me_file = w.me_file(kids)
    members = await band_memberships(conn, [target])
    assert list(members) == [(target, me_file)]
