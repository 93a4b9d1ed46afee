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
from qlarius_jobs.settings import Settings

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


def test_the_buffer_cache_is_a_quarter_of_the_memory_a_container_may_use(tmp_path):
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    unlimited, lower, higher = tmp_path / "v2", tmp_path / "lower", tmp_path / "higher"
    unlimited.write_text("max\n")
    lower.write_text(f"{2 * 1024**3}\n")  # a container of 2 GiB
    higher.write_text(f"{2**63 - 4096}\n")  # cgroup v1's "no limit"
    assert embedded.machine_memory_bytes((unlimited, higher)) == physical
    assert embedded.machine_memory_bytes((tmp_path / "absent", lower)) == min(physical, 2 * 1024**3)
    assert embedded.shared_buffers_mb(24 * 1024**3) == 6 * 1024
    assert embedded.shared_buffers_mb(256 * 1024**2) == 128  # never below PostgreSQL's default
    config = embedded.server_config(embedded.locate_cluster(), Settings())
    assert f"shared_buffers = {embedded.shared_buffers_mb()}MB" in config.splitlines()
