"""Property test: the SQL snapshot and band matching against a small independent reference."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.support import TEST_DB


@dataclass
class Case:
    parents: list[tuple[str, int]]  # (name, display_order)
    children: list[tuple[int, str, int]]  # (parent index, name, display_order)
    groups: list[tuple[int, list[int]]]  # (parent index, child indexes)
    bands: list[list[int]]  # group indexes per band
    tags: list[dict[int, str | None]]  # per MeFile: child index -> tag_value


@st.composite
def cases(draw: st.DrawFn) -> Case:
    n_parents = draw(st.integers(1, 4))
    parents = [(f"P{i}", draw(st.integers(1, 3))) for i in range(n_parents)]
    children = []
    for p in range(n_parents):
        for c in range(draw(st.integers(1, 4))):
            children.append((p, f"P{p}C{c}", draw(st.integers(1, 3))))
    groups = []
    for _ in range(draw(st.integers(1, 5))):
        p = draw(st.integers(0, n_parents - 1))
        own = [i for i, ch in enumerate(children) if ch[0] == p]
        groups.append((p, draw(st.lists(st.sampled_from(own), unique=True, max_size=len(own)))))
    bands = [
        draw(st.lists(st.integers(0, len(groups) - 1), unique=True, max_size=4))
        for _ in range(draw(st.integers(1, 4)))
    ]
    values = st.one_of(
        st.none(), st.just(""), st.sampled_from(["x", "10028", "Ünïcode", 'q"uo\\te\n'])
    )
    tags = [
        draw(st.dictionaries(st.integers(0, len(children) - 1), values, max_size=len(children)))
        for _ in range(draw(st.integers(1, 5)))
    ]
    return Case(parents, children, groups, bands, tags)


def reference_snapshot(case: Case, ids: dict, me_file: int, band: int) -> dict:
    band_children = {c for g in case.bands[band] for c in case.groups[g][1]}
    entries: dict[int, list] = {}
    for child, value in case.tags[me_file].items():
        if child not in band_children:
            continue
        p, name, order = case.children[child]
        entries.setdefault(p, []).append([ids["child"][child], value or name, order])
    result = []
    for p, kids in entries.items():
        kids.sort(key=lambda k: (k[2], k[0]))
        name, order = case.parents[p]
        result.append([ids["parent"][p], name, order, kids])
    result.sort(key=lambda e: (e[2], e[0]))
    return {"tags": result}


def reference_band(case: Case, ids: dict, me_file: int) -> int | None:
    tagged = set(case.tags[me_file])
    matching = [
        b
        for b, groups in enumerate(case.bands)
        if groups and all(set(case.groups[g][1]) & tagged for g in groups)
    ]
    if not matching:
        return None
    best = min(matching, key=lambda b: (-len(case.bands[b]), ids["band"][b]))
    return ids["band"][best]


def insert_case(cur: psycopg.Cursor, case: Case) -> dict:
    ids: dict[str, list[int]] = {"parent": [], "child": [], "group": [], "band": [], "me_file": []}
    for name, order in case.parents:
        cur.execute(
            "INSERT INTO traits (trait_name, display_order) VALUES (%s, %s) RETURNING id",
            (name, order),
        )
        ids["parent"].append(cur.fetchone()[0])
    for p, name, order in case.children:
        cur.execute(
            "INSERT INTO traits (trait_name, display_order, parent_trait_id) VALUES (%s, %s, %s) RETURNING id",
            (name, order, ids["parent"][p]),
        )
        ids["child"].append(cur.fetchone()[0])
    for p, kids in case.groups:
        cur.execute(
            "INSERT INTO trait_groups (title, parent_trait_id) VALUES ('g', %s) RETURNING id",
            (ids["parent"][p],),
        )
        gid = cur.fetchone()[0]
        ids["group"].append(gid)
        for k in kids:
            cur.execute("INSERT INTO trait_group_traits VALUES (%s, %s)", (gid, ids["child"][k]))
    cur.execute("INSERT INTO targets (title) VALUES ('t') RETURNING id")
    ids["target"] = [cur.fetchone()[0]]
    for groups in case.bands:
        cur.execute(
            "INSERT INTO target_bands (target_id) VALUES (%s) RETURNING id", (ids["target"][0],)
        )
        bid = cur.fetchone()[0]
        ids["band"].append(bid)
        for g in groups:
            cur.execute(
                "INSERT INTO target_band_trait_groups VALUES (%s, %s)", (bid, ids["group"][g])
            )
    for tags in case.tags:
        cur.execute("INSERT INTO me_files DEFAULT VALUES RETURNING id")
        mid = cur.fetchone()[0]
        ids["me_file"].append(mid)
        for child, value in tags.items():
            cur.execute(
                "INSERT INTO me_file_tags (me_file_id, trait_id, tag_value) VALUES (%s, %s, %s)",
                (mid, ids["child"][child], value),
            )
    return ids


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=cases())
def test_sql_agrees_with_reference(case: Case) -> None:
    with psycopg.connect(TEST_DB.conninfo) as conn, conn.cursor() as cur:
        try:
            ids = insert_case(cur, case)
            pairs = [(m, b) for m in range(len(case.tags)) for b in range(len(case.bands))]
            cur.execute(
                "SELECT me_file_id, band_id, snapshot FROM qlarius_matching_tags_snapshots(%s, %s)",
                ([ids["me_file"][m] for m, _ in pairs], [ids["band"][b] for _, b in pairs]),
            )
            got = {(r[0], r[1]): r[2] for r in cur.fetchall()}
            assert len(got) == len(pairs)
            for m, b in pairs:
                assert got[(ids["me_file"][m], ids["band"][b])] == reference_snapshot(
                    case, ids, m, b
                )
            cur.execute(
                "SELECT me_file_id, band_id FROM qlarius_band_memberships WHERE target_id = %s",
                (ids["target"][0],),
            )
            members = dict(cur.fetchall())
            for m in range(len(case.tags)):
                assert members.get(ids["me_file"][m]) == reference_band(case, ids, m)
        finally:
            conn.rollback()


COPIES = 1000  # MeFiles enough, and close enough, for the function's read by trait (0030)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=cases())
def test_sql_agrees_with_reference_when_reading_by_trait(case: Case) -> None:
    """The same reference, for 1,000 MeFiles with consecutive ids asked at once: the function
    then reads the band traits' tags by trait over their span instead of MeFile by MeFile.
    Each copy has the tags of one of the case's MeFiles, so its snapshot is that one's."""
    with psycopg.connect(TEST_DB.conninfo) as conn, conn.cursor() as cur:
        try:
            ids = insert_case(cur, case)
            sources = [ids["me_file"][k % len(case.tags)] for k in range(COPIES)]
            cur.execute(
                "INSERT INTO me_files (id) SELECT nextval(pg_get_serial_sequence('me_files', 'id')) "
                "FROM generate_series(1, %s) RETURNING id",
                (COPIES,),
            )
            copies = sorted(r[0] for r in cur.fetchall())
            cur.execute(
                "INSERT INTO me_file_tags (me_file_id, trait_id, tag_value) "
                "SELECT c.id, t.trait_id, t.tag_value "
                "FROM unnest(%s::bigint[], %s::bigint[]) c(id, source) "
                "JOIN me_file_tags t ON t.me_file_id = c.source",
                (copies, sources),
            )
            pairs = [(k, b) for k in range(COPIES) for b in range(len(case.bands))]
            cur.execute(
                "SELECT me_file_id, band_id, snapshot FROM qlarius_matching_tags_snapshots(%s, %s)",
                ([copies[k] for k, _ in pairs], [ids["band"][b] for _, b in pairs]),
            )
            got = {(r[0], r[1]): r[2] for r in cur.fetchall()}
            assert len(got) == len(pairs)
            for k, b in pairs:
                assert got[(copies[k], ids["band"][b])] == reference_snapshot(
                    case, ids, k % len(case.tags), b
                )
        finally:
            conn.rollback()
