"""A real PgBouncer in transaction mode, in front of a PostgreSQL server, for the tests, the
storm and the fault tests (``QLARIUS_BEHIND_POOLER=true`` deployments, as users run them).

Developer tooling: the runtime never imports it. It needs Debian's ``pgbouncer`` package
(``apt-get install pgbouncer``; ``.ci/run`` installs it). As root, PgBouncer runs as the
``postgres`` OS user (it refuses to run as root), like the embedded cluster.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo as pg_conninfo

from qlarius_jobs.db.queries import QueryFile

SQL = QueryFile.of(__file__)

RUN_AS_WHEN_ROOT = "postgres"


class PoolerUnavailable(RuntimeError):
    """PgBouncer is not installed, or did not start; the message says what to do."""


def find_pgbouncer() -> Path:
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise PoolerUnavailable(
            "pgbouncer is not installed: apt-get install pgbouncer (.ci/run installs it)"
        )
    return Path(found)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PgBouncer:
    """PgBouncer forwarding every database name to the same one on ``server`` (a conninfo)."""

    server: str
    pool_size: int = 20
    pool_mode: str = "transaction"
    # 0: PgBouncer checks a server session before each reuse (the tests end sessions between
    # tests; the fault tests restart the server); PgBouncer's default is 30 s.
    server_check_delay: int = 0
    # how long a client's query waits for a server session (PgBouncer's default: 120 s); short,
    # so that a server gone for good shows as errors, as the fault tests measure
    query_wait_timeout: int = 10
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="qlarius-pgb-")))
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def logfile(self) -> Path:
        return self.folder / "pgbouncer.log"

    def conninfo(self, base: str | None = None) -> str:
        """``base`` (default: the server's conninfo) reached through the pooler instead."""
        return pg_conninfo.make_conninfo(base or self.server, host="127.0.0.1", port=self.port)

    def _config(self) -> str:
        params = pg_conninfo.conninfo_to_dict(self.server)
        host = params.get("host") or "localhost"
        server_port = params.get("port") or 5432
        return f"""[databases]
* = host={host} port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.folder / "userlist.txt"}
pool_mode = {self.pool_mode}
default_pool_size = {self.pool_size}
max_client_conn = 2000
server_check_delay = {self.server_check_delay}
server_login_retry = 1
query_wait_timeout = {self.query_wait_timeout}
ignore_startup_parameters = extra_float_digits
logfile = {self.logfile}
pidfile = {self.folder / "pgbouncer.pid"}
"""

    def start(self) -> None:
        binary = find_pgbouncer()
        user = pg_conninfo.conninfo_to_dict(self.server).get("user") or _os_user()
        (self.folder / "userlist.txt").write_text(f'"{user}" ""\n')
        ini = self.folder / "pgbouncer.ini"
        ini.write_text(self._config())
        as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam(RUN_AS_WHEN_ROOT)
            for path in (self.folder, *self.folder.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            # the process itself changes user (no wrapper that would keep our signals)
            as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        self.process = subprocess.Popen(
            [str(binary), str(ini)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            **as_user,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(psycopg.OperationalError):
                with psycopg.connect(self.conninfo(), connect_timeout=2) as conn:
                    SQL.one_sync(conn, "probe")
                return
            time.sleep(0.1)
        tail = self.logfile.read_text(errors="replace")[-1000:] if self.logfile.exists() else ""
        self.stop()
        raise PoolerUnavailable(f"pgbouncer did not start on port {self.port}: {tail}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # PgBouncer: SIGINT is a safe shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        # its config, log and pid file: nothing reads them once it has stopped
        shutil.rmtree(self.folder, ignore_errors=True)


def _os_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


@contextlib.contextmanager
def pgbouncer(
    server: str, pool_size: int = 20, pool_mode: str = "transaction"
) -> Iterator[PgBouncer]:
    """A running PgBouncer in front of ``server``, stopped afterwards."""
    bouncer = PgBouncer(server, pool_size=pool_size, pool_mode=pool_mode)
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()
