"""Migrations and the embedded PostgreSQL cluster, against real servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo as pg_conninfo

from qlarius_jobs.db import migrate
from qlarius_jobs.dev import embedded
from qlarius_jobs.settings import Settings

CLI = [sys.executable, "-m", "qlarius_jobs.cli"]


def test_migrate_twice_is_a_no_op(conninfo, sync_conn):
    before = sync_conn.execute("SELECT count(*) FROM qlarius_schema_migrations").fetchone()[0]
    report = migrate.migrate(conninfo)
    assert report.applied == []
    assert report.procrastinate == "unchanged"
    after = sync_conn.execute("SELECT count(*) FROM qlarius_schema_migrations").fetchone()[0]
    assert before == after == len(migrate.migrations())


def test_a_database_starts_from_nothing(conninfo):
    fresh = "qlarius_jobs_fresh_test"
    admin = pg_conninfo.make_conninfo(conninfo, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {fresh}")
        conn.execute(f"CREATE DATABASE {fresh}")
    try:
        target = pg_conninfo.make_conninfo(conninfo, dbname=fresh)
        report = migrate.migrate(target)
        assert report.procrastinate.startswith("installed")
        assert [a.split("_")[0] for a in report.applied] == [
            f"{m.version:04d}" for m in migrate.migrations()
        ]
        with psycopg.connect(target) as conn:
            tables = {
                r[0]
                for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")
            }
            assert {"procrastinate_jobs", "target_populations", "offers", "ad_events"} <= tables
            partial = conn.execute(
                "SELECT count(*) FROM pg_indexes WHERE indexdef LIKE '%%WHERE (matching_tags_snapshot IS NULL)'"
            ).fetchone()[0]
            assert partial == 3
        assert migrate.migrate(target).applied == []
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {fresh} WITH (FORCE)")


@pytest.mark.slow
def test_embedded_cluster_from_nothing_in_an_unreachable_folder(tmp_path: Path):
    # tmp_path lives under a 0700 folder: the postgres user cannot reach it when we are root,
    # so the cluster must go to a folder of its own under the system temp folder.
    project = tmp_path / ("a-deliberately-long-folder-name-" * 3) / "checkout"
    project.mkdir(parents=True)
    settings = Settings(project_dir=project, database_url=None)
    cluster = embedded.locate_cluster(settings)
    assert len(str(cluster.socket_dir)) < embedded.SOCKET_PATH_LIMIT
    if os.geteuid() == 0:
        assert not str(cluster.datadir).startswith(str(project))
    try:
        info = embedded.start(settings)
        embedded.start(settings)  # starting twice is harmless
        assert migrate.migrate(info).procrastinate.startswith("installed")
        # a crash leaves a pid file naming a live process that is not postgres
        assert embedded.stop_cluster(cluster)
        pid_file = cluster.datadir / "postmaster.pid"
        pid_file.write_text(f"{os.getpid()}\n{cluster.datadir}\n")
        embedded.start_cluster(cluster)
        with psycopg.connect(info) as conn:
            assert conn.execute("SELECT count(*) FROM qlarius_schema_migrations").fetchone()[0] > 0
            # the buffer cache is a quarter of the machine's memory, not a fixed 256 MB
            buffers_mb = conn.execute(
                "SELECT setting::bigint * 8192 / 1048576 FROM pg_settings "
                "WHERE name = 'shared_buffers'"
            ).fetchone()[0]
            assert buffers_mb == embedded.shared_buffers_mb() >= 128
        other = embedded.locate_cluster(Settings(project_dir=project.parent, database_url=None))
        assert other.datadir != cluster.datadir  # two checkouts never share one cluster
    finally:
        embedded.stop_cluster(cluster)
        subprocess.run(["rm", "-rf", str(cluster.datadir.parent)], check=False)


def test_status_prints_the_null_snapshot_counts(sync_conn):
    sync_conn.execute("INSERT INTO traits (id, trait_name, display_order) VALUES (1, 'P', 1)")
    sync_conn.execute(
        "INSERT INTO traits (id, trait_name, display_order, parent_trait_id) VALUES (2, 'c', 1, 1)"
    )
    sync_conn.execute("INSERT INTO me_files (id) VALUES (1), (2)")
    sync_conn.execute("INSERT INTO targets (id, title) VALUES (1, 't')")
    sync_conn.execute("INSERT INTO target_bands (id, target_id) VALUES (1, 1)")
    sync_conn.execute(
        "INSERT INTO target_populations (target_band_id, me_file_id) VALUES (1, 1), (1, 2)"
    )
    result = subprocess.run([*CLI, "status", "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)["null_snapshots"][0]
    assert counts == {"target_populations": 2, "offers": 0, "ad_events": 0}
    human = subprocess.run([*CLI, "status"], capture_output=True, text=True, timeout=60)
    assert "target_populations" in human.stdout and "2" in human.stdout


def test_the_superseded_tags_index_is_dropped_without_holding_readers_up(conninfo, sync_conn):
    """Migration 0031 drops the (trait_id, me_file_id) index of me_file_tags that 0030's
    covering index supersedes. While an application transaction is open on the table the drop
    cannot have its lock, and every query of the table would queue behind a drop that waits:
    it waits 200 ms at a time, steps aside, and drops the index once the table is free."""
    import threading
    import time

    (drop,) = [m for m in migrate.migrations() if m.version == 31]
    sync_conn.execute("CREATE INDEX me_file_tags_trait_me_file_idx ON me_file_tags (trait_id)")
    exists = "SELECT to_regclass('me_file_tags_trait_me_file_idx') IS NOT NULL"
    errors: list[BaseException] = []

    def migrate_it() -> None:
        try:
            with psycopg.connect(conninfo) as conn:
                conn.execute(drop.sql)
        except BaseException as error:  # reported by the test
            errors.append(error)

    with psycopg.connect(conninfo) as holder:
        holder.execute("SELECT count(*) FROM me_file_tags")  # an open transaction on the table
        migration = threading.Thread(target=migrate_it)
        migration.start()
        slowest = 0.0
        until = time.monotonic() + 2.0
        while time.monotonic() < until:
            started = time.monotonic()
            sync_conn.execute("SELECT count(*) FROM me_file_tags")
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.05)
        assert migration.is_alive() and sync_conn.execute(exists).fetchone()[0]
        holder.rollback()  # the application's transaction ends
    migration.join(timeout=10)
    assert not migration.is_alive() and not errors, errors
    assert not sync_conn.execute(exists).fetchone()[0]
    assert slowest < 0.5, f"a read of me_file_tags waited {slowest:.2f} s behind the drop"
