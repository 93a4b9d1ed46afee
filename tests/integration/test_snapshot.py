"""The snapshot rules of DOMAIN.md, each checked against the real SQL."""

from __future__ import annotations

import json

from qlarius_jobs import snapshots
from tests.integration.factories import World, standard_world

DOMAIN_EXAMPLE = (
    '{"tags": [[1, "Sex (Biological)", 1, [[2, "Female", 1]]], '
    '[4, "Home Zip Code", 3, [[58587, "10028", 10028]]], '
    '[869, "Home Properties", 7, [[878, "Central Heat/AC", 2], [894, "Multi-story", 5]]]]}'
)


def _domain_example_world(w: World) -> tuple[int, int]:
    w.conn.execute(
        "INSERT INTO traits (id, trait_name, display_order, parent_trait_id) VALUES "
        "(1, 'Sex (Biological)', 1, NULL), (2, 'Female', 1, 1), (3, 'Male', 2, 1), "
        "(4, 'Home Zip Code', 3, NULL), (58587, '10028', 10028, 4), "
        "(869, 'Home Properties', 7, NULL), (878, 'Central Heat/AC', 2, 869), "
        "(894, 'Multi-story', 5, 869), (900, 'Pool', 1, 869)"
    )
    g1 = w.group("women", 1, [2])
    g2 = w.group("zip", 4, [58587])
    g3 = w.group("heat", 869, [878])
    g4 = w.group("stories and pools", 869, [894, 900])
    target = w.target()
    band = w.band(target, [g1, g2, g3, g4], bullseye=True)
    # Male (3) is not in any group of the band: it must not appear.
    me_file = w.me_file({2: None, 3: None, 58587: "10028", 878: "", 894: "Multi-story"})
    return me_file, band


async def test_domain_example_is_reproduced_byte_for_byte(conn, sync_conn):
    me_file, band = _domain_example_world(World(sync_conn))
    result = await snapshots.compute_snapshots(conn, [(me_file, band)])
    assert result[(me_file, band)] == json.loads(DOMAIN_EXAMPLE)
    text = sync_conn.execute(
        "SELECT snapshot::text FROM qlarius_matching_tags_snapshots(ARRAY[%s]::bigint[], ARRAY[%s]::bigint[])",
        (me_file, band),
    ).fetchone()[0]
    assert text == DOMAIN_EXAMPLE


async def test_only_tags_in_the_band_groups_count(conn, sync_conn):
    s = standard_world(sync_conn)
    w = s.w
    other = w.parent("Pets", 9)
    dog = w.child(other, "Dog")
    me_file = w.me_file([s.female, s.male, dog])
    result = await snapshots.compute_snapshots(conn, [(me_file, s.outer)])
    assert result[(me_file, s.outer)] == {
        "tags": [[s.sex, "Sex (Biological)", 1, [[s.female, "Female", 1]]]]
    }


async def test_two_groups_over_one_parent_merge_into_one_entry(conn, sync_conn):
    w = World(sync_conn)
    props = w.parent("Home Properties", 7)
    heat = w.child(props, "Central Heat/AC", 2)
    story = w.child(props, "Multi-story", 5)
    g1 = w.group("heat", props, [heat])
    g2 = w.group("story", props, [story])
    band = w.band(w.target(), [g1, g2])
    me_file = w.me_file([story, heat])
    result = await snapshots.compute_snapshots(conn, [(me_file, band)])
    assert result[(me_file, band)] == {
        "tags": [
            [props, "Home Properties", 7, [[heat, "Central Heat/AC", 2], [story, "Multi-story", 5]]]
        ]
    }


async def test_parents_and_children_ordered_by_display_order_then_id(conn, sync_conn):
    w = World(sync_conn)
    # Parents: b has a lower display_order than a; c ties with b and has a higher id.
    a = w.parent("A", 5)
    b = w.parent("B", 2)
    c = w.parent("C", 2)
    a1 = w.child(a, "a1", 3)
    a2 = w.child(a, "a2", 1)
    a3 = w.child(a, "a3", 1)  # ties with a2 on display_order: a2 (lower id) first
    b1 = w.child(b, "b1", 1)
    c1 = w.child(c, "c1", 1)
    groups = [w.group("ga", a, [a1, a2, a3]), w.group("gb", b, [b1]), w.group("gc", c, [c1])]
    band = w.band(w.target(), groups)
    me_file = w.me_file([a3, c1, a1, b1, a2])
    result = await snapshots.compute_snapshots(conn, [(me_file, band)])
    assert result[(me_file, band)] == {
        "tags": [
            [b, "B", 2, [[b1, "b1", 1]]],
            [c, "C", 2, [[c1, "c1", 1]]],
            [a, "A", 5, [[a2, "a2", 1], [a3, "a3", 1], [a1, "a1", 3]]],
        ]
    }


async def test_many_ties_on_display_order_are_broken_by_id(conn, sync_conn):
    """Twelve parents and twelve children of one parent, their display_order tied in pairs and
    given in shuffled order: ties are broken by id however many there are. (A sort of fewer
    than seven rows keeps tied rows in the order it got them: a missing id tie-break passed
    the tests with four parents; a review found it.)"""
    w = World(sync_conn)
    parents = [w.parent(f"P{i}", i % 2) for i in range(12)]
    many = parents[0]
    kids = [w.child(many, f"K{i}", i % 2) for i in range(12)]
    others = [w.child(p, f"C{i}", 1) for i, p in enumerate(parents[1:], start=1)]
    groups = [w.group("many", many, kids)] + [
        w.group(f"g{i}", p, [c])
        for i, (p, c) in enumerate(zip(parents[1:], others, strict=True), start=1)
    ]
    band = w.band(w.target(), groups)
    me_file = w.me_file(list(reversed(kids + others)))
    tags = (await snapshots.compute_snapshots(conn, [(me_file, band)]))[(me_file, band)]["tags"]
    order_of = {trait: i % 2 for traits in (parents, kids) for i, trait in enumerate(traits)}
    assert [t[0] for t in tags] == sorted(parents, key=lambda p: (order_of[p], p))
    children = next(t[3] for t in tags if t[0] == many)
    assert [c[0] for c in children] == sorted(kids, key=lambda k: (order_of[k], k))


async def test_value_falls_back_to_trait_name_when_null_or_empty(conn, sync_conn):
    s = standard_world(sync_conn)
    w = s.w
    me_file = w.me_file({s.female: None, s.z10028: "", s.heat: "gas furnace"})
    tags = (await snapshots.compute_snapshots(conn, [(me_file, s.bullseye)]))[
        (me_file, s.bullseye)
    ]["tags"]
    values = {child[0]: child[1] for parent in tags for child in parent[3]}
    assert values == {s.female: "Female", s.z10028: "10028", s.heat: "gas furnace"}
    assert all(v is not None for v in values.values())


async def test_names_and_values_json_must_escape_come_back_as_written(conn, sync_conn):
    """Snapshots are written as JSON text and parsed once (0032): quotes, backslashes, control
    characters, non-ASCII and negative orders come back exactly, and the text is the one that
    the same structure, parsed by PostgreSQL from Python's JSON, prints."""
    w = World(sync_conn)
    quoted = w.parent('Say "hi" \\ back\\slash', -2)
    tab = w.child(quoted, "tab\there", -1)
    quirky = w.child(quoted, "unused name", 4)
    emoji = w.parent("Émoji 😀 </script>", 0)
    plain = w.child(emoji, "line\nbreak \u0001 bell", 1)
    groups = [w.group("q", quoted, [tab, quirky]), w.group("e", emoji, [plain])]
    band = w.band(w.target(), groups)
    value = 'a "value" \\ with\r\nlines\t\u001f and ünï'
    me_file = w.me_file({tab: None, quirky: value, plain: ""})
    expected = {
        "tags": [
            [quoted, 'Say "hi" \\ back\\slash', -2, [[tab, "tab\there", -1], [quirky, value, 4]]],
            [emoji, "Émoji 😀 </script>", 0, [[plain, "line\nbreak \u0001 bell", 1]]],
        ]
    }
    result = await snapshots.compute_snapshots(conn, [(me_file, band)])
    assert result[(me_file, band)] == expected
    text, reference = sync_conn.execute(
        "SELECT snapshot::text, %s::jsonb::text FROM qlarius_matching_tags_snapshots(%s, %s)",
        (json.dumps(expected), [me_file], [band]),
    ).fetchone()
    assert text == reference


async def test_no_match_gives_empty_tags_never_null(conn, sync_conn):
    s = standard_world(sync_conn)
    me_file = s.w.me_file([s.male])
    nobody = 10_000_000  # a MeFile id with no tags at all
    result = await snapshots.compute_snapshots(conn, [(me_file, s.bullseye), (nobody, s.outer)])
    assert result == {(me_file, s.bullseye): {"tags": []}, (nobody, s.outer): {"tags": []}}


async def test_same_input_gives_byte_identical_json(sync_conn):
    s = standard_world(sync_conn)
    w = s.w
    first = w.me_file([s.story, s.z10028, s.female, s.heat])
    second = w.me_file([s.heat, s.female, s.z10028, s.story])
    texts = sync_conn.execute(
        "SELECT me_file_id, snapshot::text FROM qlarius_matching_tags_snapshots(%s, %s) "
        "ORDER BY me_file_id",
        ([first, second, first], [s.bullseye] * 3),
    ).fetchall()
    assert len(texts) == 2  # duplicate pairs collapse to one row
    assert texts[0][1] == texts[1][1]
    again = sync_conn.execute(
        "SELECT snapshot::text FROM qlarius_matching_tags_snapshots(%s, %s)",
        ([first], [s.bullseye]),
    ).fetchone()[0]
    assert again == texts[0][1]


async def test_guarded_fill_never_overwrites_and_counts_true_updates(conn, sync_conn):
    s = standard_world(sync_conn)
    w = s.w
    m1 = w.me_file([s.female])
    m2 = w.me_file([s.female, s.z10001])
    m3 = w.me_file([s.male])
    ids = [
        w.one(
            "INSERT INTO target_populations (target_band_id, me_file_id, matching_tags_snapshot) "
            "VALUES (%s, %s, %s) RETURNING id",
            (band, m, snap),
        )
        for band, m, snap in [
            (s.outer, m1, None),
            (s.middle, m2, '{"tags": "hand-written, keep me"}'),
            (s.outer, m3, None),
        ]
    ]
    assert sorted(await snapshots.fill_missing_population_snapshots(conn, ids)) == [ids[0], ids[2]]
    snaps = w.snapshots()
    assert snaps[ids[0]] == {"tags": [[s.sex, "Sex (Biological)", 1, [[s.female, "Female", 1]]]]}
    assert snaps[ids[1]] == {"tags": "hand-written, keep me"}
    assert snaps[ids[2]] == {"tags": []}  # computed, nothing matched: not NULL
    assert await snapshots.fill_missing_population_snapshots(conn, ids) == []
    assert await snapshots.fill_missing_population_snapshots(conn, []) == []


async def test_copied_snapshots_come_from_the_population_even_when_it_was_null(conn, sync_conn):
    s = standard_world(sync_conn)
    w = s.w
    m1 = w.me_file([s.female])
    m2 = w.me_file([s.female])
    w.conn.execute(
        "INSERT INTO target_populations (target_band_id, me_file_id) VALUES (%s, %s)",
        (s.outer, m1),
    )
    campaign = w.campaign(s.target, {s.outer: ("1.00", "1.50")})
    run = w.one("SELECT id FROM media_runs WHERE campaign_id = %s", (campaign,))
    offer_ids = [
        w.one(
            "INSERT INTO offers (campaign_id, me_file_id, media_run_id, target_band_id, "
            "offer_amt, marketer_cost_amt) VALUES (%s, %s, %s, %s, 1, 1.5) RETURNING id",
            (campaign, m, run, s.outer),
        )
        for m in (m1, m2)
    ]
    result = await snapshots.fill_missing_copied_snapshots(conn, "offers", offer_ids)
    assert result.updated == 1
    assert result.populations_filled == 1
    assert [o["id"] for o in result.orphans] == [offer_ids[1]]  # m2 has no population
    offers = w.snapshots("offers")
    (population_snapshot,) = w.snapshots().values()
    assert population_snapshot is not None
    assert offers[offer_ids[0]] == population_snapshot
    assert offers[offer_ids[1]] is None


def test_a_mefiles_tags_can_be_read_from_the_index_alone(sync_conn):
    """What the snapshot function reads of a MeFile's tags (me_file_id, trait_id, tag_value) is
    all in the unique index (migration 0021): with the other paths off, the planner can still
    answer from an index-only scan, which it could not if tag_value lived only in the heap. The
    (trait_id, me_file_id) index includes it too (0030): a populate reads its range by trait."""
    s = standard_world(sync_conn)
    me_file = s.w.me_file([s.female])
    sync_conn.execute("VACUUM ANALYZE me_file_tags")  # all-visible pages: no heap visit needed
    with sync_conn.transaction():
        sync_conn.execute("SET LOCAL enable_seqscan = off")
        sync_conn.execute("SET LOCAL enable_bitmapscan = off")
        plan = "\n".join(
            row[0]
            for row in sync_conn.execute(
                "EXPLAIN SELECT me_file_id, trait_id, tag_value FROM me_file_tags "
                "WHERE me_file_id = ANY(%s::bigint[])",
                ([me_file],),
            )
        )
    # either index of me_file_tags may answer: both include tag_value (0021, 0030)
    assert "Index Only Scan using me_file_tags_" in plan, plan
    for index in ("me_file_tags_me_file_trait_key", "me_file_tags_trait_me_file_value_idx"):
        definition = sync_conn.execute("SELECT pg_get_indexdef(%s::regclass)", (index,))
        assert "INCLUDE (tag_value)" in definition.fetchone()[0]
    constraint = sync_conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conname = 'me_file_tags_me_file_trait_key'"
    ).fetchone()[0]
    assert constraint == "UNIQUE (me_file_id, trait_id) INCLUDE (tag_value)"


TRAIT_INDEX = "me_file_tags_trait_me_file_value_idx"


async def _reading_trait_index(conn, pairs) -> tuple[dict, int]:
    """The snapshots of ``pairs``, and how many entries computing them read from the trait
    index: this session's own count (pg_stat_get_xact_tuples_returned: not yet reported), read
    before and after in one transaction, so that no other session's reads count."""
    count = "SELECT pg_stat_get_xact_tuples_returned(%s::regclass)"
    async with conn.transaction():
        before = await (await conn.execute(count, (TRAIT_INDEX,))).fetchone()
        computed = await snapshots.compute_snapshots(conn, pairs)
        after = await (await conn.execute(count, (TRAIT_INDEX,))).fetchone()
    assert before is not None and after is not None
    return computed, int(after[0]) - int(before[0])


def _band_trait_tags_between(sync_conn, bands: list[int], lo: int, hi: int) -> int:
    """How many tags of the bands' traits MeFiles lo..hi have: what a read by trait over
    that span returns from the trait index, and nothing else does."""
    return sync_conn.execute(
        "SELECT count(*) FROM me_file_tags WHERE me_file_id BETWEEN %s AND %s "
        "AND trait_id IN (SELECT trait_id FROM qlarius_band_traits WHERE band_id = ANY(%s))",
        (lo, hi, bands),
    ).fetchone()[0]


async def test_many_mefiles_close_together_are_read_by_trait_with_the_same_snapshots(
    conn, sync_conn
):
    """Given 1,000 MeFiles or more, close together (a populate's range), the snapshot function
    reads the band traits' tags by trait over the ids' span (migration 0030); fewer, or far
    apart, MeFile by MeFile. Both reads give the same snapshots, byte for byte, including for
    MeFiles of the span that were not asked for (left out) and tags of other traits.

    Which path ran is told by the entries read from the trait index: a read over the span
    returns exactly the band traits' tags in it. Read MeFile by MeFile, the planner may probe
    either index: through (me_file_id, trait_id) none, through the trait index every tag of
    the trait, including those of MeFiles far outside the span (CI's planner chose the
    latter for 500 MeFiles: counting scans could not tell the two paths apart)."""
    s = standard_world(sync_conn)
    children = [s.female, s.male, s.z10028, s.z10001, s.heat, s.story]
    values = [None, "", "typed", None, "Multi-story", None]
    # 2,000 MeFiles, each with a mix of tags; every third is not asked for; 20 far beyond
    sync_conn.execute(
        "INSERT INTO me_files (id) SELECT 100000 + n FROM generate_series(1, 2000) n "
        "UNION ALL SELECT 900000 + n FROM generate_series(1, 20) n"
    )
    sync_conn.execute(
        "INSERT INTO me_file_tags (me_file_id, trait_id, tag_value) "
        "SELECT m.id, (%(children)s::bigint[])[1 + k], (%(values)s::text[])[1 + mod(m.id, 6)] "
        "FROM me_files m, generate_series(0, 5) k "
        "WHERE m.id > 100000 AND (mod(m.id + k * 7, 3) <> 0 OR k = 0)",
        {"children": children, "values": values},
    )
    sync_conn.execute("VACUUM ANALYZE me_file_tags")
    asked = [100000 + n for n in range(1, 2001) if n % 3]
    bands = [s.outer, s.middle, s.bullseye]
    pairs = [(m, band) for m in asked for band in bands]
    by_trait, read = await _reading_trait_index(conn, pairs)
    assert read == _band_trait_tags_between(sync_conn, bands, min(asked), max(asked)) > 0
    by_me_file: dict = {}
    for start in range(0, len(asked), 500):  # fewer than 1,000 MeFiles a call
        chunk = asked[start : start + 500]
        chosen = set(chunk)
        computed, read = await _reading_trait_index(conn, [p for p in pairs if p[0] in chosen])
        assert read != _band_trait_tags_between(sync_conn, bands, min(chunk), max(chunk))
        by_me_file |= computed
    assert len(by_trait) == len(pairs) == len(by_me_file)
    assert by_trait == by_me_file  # jsonb: equal as values, so equal as text
    assert sum(1 for snap in by_trait.values() if snap["tags"]) > len(pairs) // 2
    lone = s.w.me_file([s.heat])
    far_apart = [(100000 + n, s.outer) for n in range(1, 2001, 2)] + [(lone, s.outer)]
    _, read = await _reading_trait_index(conn, far_apart)  # 1,001 MeFiles over a wide span
    ids = [m for m, _ in far_apart]
    assert read != _band_trait_tags_between(sync_conn, [s.outer], min(ids), max(ids))


def test_ids_at_both_ends_of_bigint_do_not_overflow_the_span(sync_conn):
    """Found by a review: the span of 1,000 ids reaching 2^63 - 1 overflowed bigint."""
    s = standard_world(sync_conn)
    ids = [*range(0, 999), 2**63 - 1]
    rows = sync_conn.execute(
        "SELECT count(*) FROM qlarius_matching_tags_snapshots(%s::bigint[], %s::bigint[])",
        (ids, [s.outer] * len(ids)),
    ).fetchone()
    assert rows[0] == 1000
    ids = [-(2**63), *range(1, 1000)]
    rows = sync_conn.execute(
        "SELECT count(*) FROM qlarius_matching_tags_snapshots(%s::bigint[], %s::bigint[])",
        (ids, [s.outer] * len(ids)),
    ).fetchone()
    assert rows[0] == 1000
