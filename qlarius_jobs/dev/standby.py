"""A streaming standby of the embedded cluster, for the console reading from a standby
(``QLARIUS_READ_DATABASE_URL``): its tests, and trying it by hand.

A fresh ``pg_basebackup -R`` of the running cluster (over its unix socket, as the server
user; initdb's ``pg_hba.conf`` trusts local replication connections and PostgreSQL 15's
defaults, ``wal_level = replica`` and ``max_wal_senders = 10``, allow it), started with
``pg_ctl`` on its own data folder, socket folder and port beside the cluster's. ``stop``
removes it: a standby is never reused (one left from an earlier run may have diverged).
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
from pathlib import Path

from qlarius_jobs.db.connection import DatabaseUnavailable
from qlarius_jobs.dev import embedded
from qlarius_jobs.settings import get_settings

STANDBY_PORT = 5433


def locate(primary: embedded.EmbeddedCluster) -> embedded.EmbeddedCluster:
    """Where the primary's standby lives (beside it). Pure: creates nothing."""
    base = primary.datadir.parent / "standby"
    socket_dir = base / "run"
    if len(str(socket_dir / f".s.PGSQL.{STANDBY_PORT}.lock")) > embedded.SOCKET_PATH_LIMIT:
        key = hashlib.sha256(str(base).encode()).hexdigest()[:12]
        socket_dir = Path(tempfile.gettempdir()) / f"qlarius-standby-{key}"
    return dataclasses.replace(
        primary, datadir=base / "data", socket_dir=socket_dir, port=STANDBY_PORT
    )


def start(primary: embedded.EmbeddedCluster) -> embedded.EmbeddedCluster:
    """A new standby of ``primary`` (which must run), started and accepting read-only
    connections; any standby left from before is stopped and removed first."""
    bindir = embedded._require_bindir(primary)
    standby = locate(primary)
    stop(standby)
    embedded._make_dir_for_server(standby, standby.datadir.parent)
    embedded._make_dir_for_server(standby, standby.socket_dir)
    backup = embedded._run(
        standby,
        [
            str(bindir / "pg_basebackup"),
            "-D",
            str(standby.datadir),
            "-R",  # standby.signal, and primary_conninfo in postgresql.auto.conf
            "-X",
            "stream",
            "-c",
            "fast",
            "-h",
            str(primary.socket_dir),
            "-p",
            str(primary.port),
            "-U",
            primary.server_user,
        ],
        check=False,
    )
    if backup.returncode != 0:
        raise DatabaseUnavailable(f"pg_basebackup failed: {backup.stderr.strip()[-500:]}")
    # the copied qlarius.conf names the primary's socket and port: the standby's own instead
    embedded._write_server_config(standby, get_settings())
    resume(standby)
    return standby


def resume(standby: embedded.EmbeddedCluster) -> None:
    """Start a standby that was stopped (``embedded.stop_cluster``), until it accepts
    connections (consistent, replaying)."""
    bindir = embedded._require_bindir(standby)
    started = embedded._run(
        standby,
        [
            str(bindir / "pg_ctl"),
            "start",
            "-D",
            str(standby.datadir),
            "-w",
            "-t",
            "60",
            "-l",
            str(standby.logfile),
        ],
        check=False,
    )
    if started.returncode != 0:
        raise DatabaseUnavailable(
            f"could not start the standby in {standby.datadir}: {started.stderr.strip()}"
        )


def stop(standby: embedded.EmbeddedCluster) -> None:
    """Stop the standby if it runs, and remove it."""
    if embedded.is_running(standby):
        embedded.stop_cluster(standby)
    shutil.rmtree(standby.datadir.parent, ignore_errors=True)
    shutil.rmtree(standby.socket_dir, ignore_errors=True)
