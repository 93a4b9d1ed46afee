"""Setting the database up, where no server is needed: Procrastinate's upgrade files, and the
one-line errors when there is no server to start or reach."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from qlarius_jobs.db import migrate
from qlarius_jobs.dev import embedded

CLI = [sys.executable, "-m", "qlarius_jobs.cli"]


def test_procrastinate_upgrade_files_are_picked_in_order():
    upgrades = migrate._procrastinate_upgrades("3.3.0", "3.10.0")
    names = [path.name for _, path in upgrades]
    assert names and all(n.startswith("03.04.00") for n in names)
    assert names == sorted(names)
    assert migrate._procrastinate_upgrades("3.10.0", "3.10.0") == []


def test_no_server_binaries_says_how_to_fix(tmp_path):
    cluster = dataclasses.replace(embedded.locate_cluster(), bindir=None)
    with pytest.raises(
        embedded.DatabaseUnavailable, match=r"install PostgreSQL 14 or newer.*DATABASE_URL"
    ):
        embedded.start_cluster(cluster)


def test_unreachable_url_is_one_clear_line():
    env = {**os.environ, "DATABASE_URL": "postgresql://app@127.0.0.1:1/marketplace"}
    env.pop("QLARIUS_DATABASE_URL", None)
    result = subprocess.run([*CLI, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert 'database "marketplace" on 127.0.0.1:1' in lines[0]
    assert "Traceback" not in result.stderr
