"""The faults, short (``make faults`` runs the long ones): each scenario restarts, crashes or
starves a throwaway server of its own under real worker processes, or kills a worker mid-job,
and checks what must survive (see ``qlarius_jobs/dev/faults.py`` and README "Operations")."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from qlarius_jobs.dev import faults

# Each scenario beside its twin behind PgBouncer (two throwaway clusters, two threads, each
# with its own event loop: a scenario's blocking steps never hold up the other's clock). The
# scenarios mostly wait (on restarts, rescues, limits): two at a time take the time of one.
PAIRS = [
    tuple((s, pooled) for pooled in (False, True) if not pooled or s in faults.POOLED_SCENARIOS)
    for s in faults.SCENARIOS
]


def _run(scenario, pooled: bool, folder: Path) -> faults.Scenario:
    """One scenario, short, in this thread (its own event loop and its own BEHIND_POOLER)."""
    folder.mkdir()
    token = faults.BEHIND_POOLER.set(pooled)
    try:
        return asyncio.run(scenario(folder, True))
    finally:
        faults.BEHIND_POOLER.reset(token)


@pytest.mark.slow
@pytest.mark.parametrize("pair", PAIRS, ids=[pair[0][0].__name__ for pair in PAIRS])
async def test_fault(pair, tmp_path):
    runs = [
        asyncio.to_thread(_run, scenario, pooled, tmp_path / ("pooled" if pooled else "direct"))
        for scenario, pooled in pair
    ]
    results = await asyncio.gather(*runs)
    for result in results:
        print(result.line())
    failed = [r for r in results if r.problems]
    assert not failed, (
        "\n".join(r.line() for r in failed)
        + "\n"
        + "\n".join(
            f"--- {log.relative_to(tmp_path)}\n{log.read_text(errors='replace')[-3000:]}"
            for log in tmp_path.glob("*/*.log")
        )
    )


def test_a_throwaway_cluster_leaves_no_folder_behind():
    """Each scenario's cluster lives in a temporary folder; once the scenario ends it is gone
    (they used to pile up in /tmp: 477 of them, 32 GB, on a developer's machine)."""
    with faults.throwaway() as cluster:
        cluster.start()
        folder = cluster.folder
        assert folder.is_dir()
    assert not folder.exists()
