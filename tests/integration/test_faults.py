"""The faults, short (``make faults`` runs the long ones): each scenario restarts, crashes or
starves a throwaway server of its own under real worker processes, or kills a worker mid-job,
and checks what must survive (see ``qlarius_jobs/dev/faults.py`` and README "Operations")."""

from __future__ import annotations

import pytest

from qlarius_jobs.dev import faults


@pytest.mark.slow
@pytest.mark.parametrize("scenario", faults.SCENARIOS, ids=lambda s: s.__name__)
async def test_fault(scenario, tmp_path):
    result = await scenario(tmp_path, True)
    print(result.line())
    assert result.problems == [], (
        result.line()
        + "\n"
        + "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
            for log in tmp_path.glob("*.log")
        )
    )
