"""The layers stay apart: the job runtime loads neither the tooling nor the benchmarks;
importing a module builds nothing, and building an app connects to nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

RUNTIME = [
    "qlarius_jobs.app",
    "qlarius_jobs.api",
    "qlarius_jobs.cli",
    "qlarius_jobs.jobs.catalog",
    "qlarius_jobs.worker.runner",
    "qlarius_jobs.ops.status",
]


def _imported_after(modules: list[str], code: str = "") -> list[str]:
    script = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"{code}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('qlarius_jobs'))))\n"
    )
    env = {
        **os.environ,
        # nothing listens there: building the app must not try
        "QLARIUS_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none?connect_timeout=1",
    }
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_the_runtime_never_loads_the_tooling_or_the_benchmarks():
    loaded = _imported_after(RUNTIME)
    assert "qlarius_jobs.jobs.populations" in loaded  # the import did happen
    assert not [m for m in loaded if m.startswith(("qlarius_jobs.dev", "qlarius_jobs.bench"))]


def test_importing_builds_nothing():
    """Not the door's app, not logging: for the application's tests and the benchmarks too."""
    loaded = _imported_after(
        [
            "qlarius_jobs.app",
            "qlarius_jobs.testing",
            "qlarius_jobs.bench.harness",
            "qlarius_jobs.cli",
        ],
        "import logging\n"
        "from qlarius_jobs import app\n"
        "assert app._door_app.cache_info().currsize == 0, 'the door app was built at import'\n"
        "assert not logging.getLogger().handlers, 'logging was set up at import'\n",
    )
    assert "qlarius_jobs.bench.harness" in loaded


def test_building_an_app_opens_nothing_and_registers_every_job():
    loaded = _imported_after(
        ["qlarius_jobs.app"],
        "from qlarius_jobs.app import app, build_app\n"
        "other = build_app()\n"
        "from qlarius_jobs.jobs import catalog\n"
        "ours = set(catalog.specs())\n"
        "assert len(ours) == 12 and ours <= set(app.tasks) and ours <= set(other.tasks)\n"
        "try:\n"
        "    app.connector.pool\n"
        "    raise SystemExit('the pool is open')\n"
        "except Exception as exc:\n"
        "    assert 'not opened' in str(exc).lower() or 'AppNotOpen' in type(exc).__name__, exc\n",
    )
    assert "qlarius_jobs.dev.embedded" not in loaded
