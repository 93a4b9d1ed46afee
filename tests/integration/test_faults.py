"""The faults, short (``make faults`` runs the long ones): each scenario restarts, crashes or
starves a throwaway server of its own under real worker processes, or kills a worker mid-job,
and checks what must survive (see ``qlarius_jobs/dev/faults.py`` and README "Operations")."""

from __future__ import annotations

import pytest

from qlarius_jobs.dev import faults

CASES = [(s, False) for s in faults.SCENARIOS] + [(s, True) for s in faults.POOLED_SCENARIOS]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scenario", "pooled"),
    CASES,
    ids=[f"{s.__name__}{'-pgbouncer' if pooled else ''}" for s, pooled in CASES],
)
async def test_fault(scenario, pooled, tmp_path):
    token = faults.BEHIND_POOLER.set(pooled)
    try:
        result = await scenario(tmp_path, True)
    finally:
        faults.BEHIND_POOLER.reset(token)
    print(result.line())
    assert result.problems == [], (
        result.line()
        + "\n"
        + "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
            for log in tmp_path.glob("*.log")
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
