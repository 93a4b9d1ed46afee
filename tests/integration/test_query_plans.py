"""No set-based pass rescans a CTE once per row, whatever the planner believes about sizes.

At 2M MeFiles, a target's offers pass ran for 25+ minutes: statistics said every offer
existed, the planner expected one candidate, and joined the candidates to another CTE by a
nested loop rescanning it per row (quadratic). The same shape can come from any join of two
CTEs, a ``NOT IN`` over one (hashed only while expected to fit in hash_mem) or a correlated
``NOT EXISTS`` over one. The passes of populate, sync and reconcile now take differences by
``EXCEPT`` and find rows again by their table's keys, so even a planner forced into nested
loops everywhere (hash and merge joins off, sequential scans discouraged) has an index to
probe at each step and never a CTE to rescan. These tests plan each statement that way, with
the parameters of each of its callers, and read the plan tree."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from qlarius_jobs.db.queries import QueryFile
from tests.integration.factories import standard_world

SNAPSHOTS = QueryFile.named("snapshots.sql")
OFFERS = QueryFile.named("jobs/offers.sql")


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _rescans_a_cte(node: dict[str, Any]) -> bool:
    """A CTE scanned again for each row of something else: the inner side of a nested loop
    (through a Materialize), or a plain (not hashed) SubPlan."""
    if node.get("Node Type") == "CTE Scan" and node.get("Parent Relationship") == "SubPlan":
        return "hashed" not in node.get("Subplan Name", "")
    if node.get("Node Type") != "Nested Loop":
        return False
    inner = node["Plans"][1]
    while inner.get("Node Type") == "Materialize":
        inner = inner["Plans"][0]
    return inner.get("Node Type") == "CTE Scan"


def _plan_with_nested_loops_only(
    conn: psycopg.Connection, text: str, params: dict[str, Any]
) -> dict[str, Any]:
    with conn.transaction():
        conn.execute("SET LOCAL enable_hashjoin = off")
        conn.execute("SET LOCAL enable_mergejoin = off")
        conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute("SET LOCAL work_mem = '64kB'")  # nothing is expected to fit in a hash
        (raw,) = conn.execute("EXPLAIN (FORMAT JSON) " + text, params).fetchone()
        conn.rollback()
    plan = raw if isinstance(raw, list) else json.loads(raw)
    return plan[0]["Plan"]


def _assert_no_cte_rescans(conn: psycopg.Connection, text: str, params: dict[str, Any]) -> None:
    plan = _plan_with_nested_loops_only(conn, text, params)
    bad = [n for n in _nodes(plan) if _rescans_a_cte(n)]
    assert not bad, json.dumps(plan, indent=1)[:6000]
    # and it is a real check: the plan has nested loops, and reads CTEs
    types = {n.get("Node Type") for n in _nodes(plan)}
    assert {"Nested Loop", "CTE Scan"} <= types, types


@pytest.fixture
def market(sync_conn):
    s = standard_world(sync_conn)
    w = s.w
    me_files = [w.me_file([s.female, s.z10028, s.story]) for _ in range(3)]
    me_files += [w.me_file([s.female]) for _ in range(2)]
    campaign = w.campaign(s.target, bids={s.bullseye: ("1.00", "1.50"), s.outer: ("0.5", "0.8")})
    sync_conn.execute("ANALYZE")
    return s, me_files, campaign


@pytest.mark.parametrize("scope", ["populate", "sync"])
def test_apply_band_memberships_never_rescans_a_cte(sync_conn, market, scope):
    s, me_files, _ = market
    params = {"target_ids": [s.target], "me_file_ids": None if scope == "populate" else me_files}
    _assert_no_cte_rescans(sync_conn, SNAPSHOTS.get("apply_band_memberships").text, params)


@pytest.mark.parametrize("scope", ["target pass", "reconcile batch", "campaign"])
@pytest.mark.parametrize(
    "query", ["lock_ineligible_offers", "insert_missing_offers", "refresh_stale_offers"]
)
def test_the_offers_statements_never_rescan_a_cte(sync_conn, market, scope, query):
    s, me_files, campaign = market
    params: dict[str, Any] = {
        "free_targets": [s.target],
        "me_file_ids": me_files if scope == "reconcile batch" else None,
        "campaign_id": campaign if scope == "campaign" else None,
        "blocked": [],
        "pending_seconds": 60,
    }
    _assert_no_cte_rescans(sync_conn, OFFERS.get(query).text, params)
