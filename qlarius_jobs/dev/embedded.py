"""The project's own PostgreSQL cluster, used when no ``DATABASE_URL`` is given.

Created on first use under ``.pgdata/`` with the installed server binaries, listening only on
a unix socket, reused later, stopped by ``qlarius-jobs db stop``. As root the server runs as
the ``postgres`` OS user. Developer tooling: the job runtime loads it only when no database
is configured (see ``db/connection.py``).

Two traps are handled: a unix socket path is limited to ~100 bytes, and the ``postgres``
user may not be able to reach a checkout inside a private home folder. In either case the
socket (or the whole cluster) goes to a short folder under the system temp folder, keyed by
the project path so that two checkouts never share one.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import glob
import hashlib
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import conninfo as pg_conninfo

from qlarius_jobs.db.connection import DatabaseUnavailable
from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.settings import Settings, get_settings

SOCKET_PATH_LIMIT = 100  # sun_path is 108 bytes on Linux; keep a margin
PORT = 5432
ROOT_SERVER_USER = "postgres"

SQL = QueryFile.of(__file__)


@dataclass(frozen=True)
class EmbeddedCluster:
    bindir: Path | None
    datadir: Path
    socket_dir: Path
    server_user: str
    database: str
    port: int = PORT  # a standby beside the cluster listens on another

    @property
    def logfile(self) -> Path:
        return self.datadir.parent / "server.log"

    @property
    def conninfo(self) -> str:
        return pg_conninfo.make_conninfo(
            host=str(self.socket_dir), port=self.port, dbname=self.database, user=self.server_user
        )

    def admin_conninfo(self) -> str:
        return pg_conninfo.make_conninfo(self.conninfo, dbname="postgres")


def project_dir(settings: Settings) -> Path:
    """The checkout this package runs from (editable install), else the current folder."""
    if settings.project_dir is not None:
        return settings.project_dir.resolve()
    source_root = Path(__file__).resolve().parents[2]  # qlarius_jobs/dev/embedded.py
    if (source_root / "pyproject.toml").exists():
        return source_root
    return Path.cwd().resolve()


def find_bindir() -> Path | None:
    """The PostgreSQL server binaries: ``pg_config --bindir``, else the newest Debian layout."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
            candidates.append(Path(out))
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(Path(v) for v in versions)
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    return None


def _server_user() -> str:
    return ROOT_SERVER_USER if os.geteuid() == 0 else getpass.getuser()


def _reachable_by(user: str, path: Path) -> bool:
    """Can ``user`` traverse every folder down to ``path``? (no side effects)

    ``.pgdata`` itself is created for the server user, so traversal is all it needs.
    """
    if os.geteuid() != 0:
        return os.access(path, os.W_OK | os.X_OK)
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return False
    groups = set(os.getgrouplist(user, entry.pw_gid))
    for folder in [path, *path.parents]:
        st = folder.stat()
        if st.st_uid == entry.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def locate_cluster(settings: Settings | None = None) -> EmbeddedCluster:
    """Where the embedded cluster lives for this project. Pure: creates nothing."""
    settings = settings or get_settings()
    project = project_dir(settings)
    key = hashlib.sha256(str(project).encode()).hexdigest()[:12]
    runtime = Path(tempfile.gettempdir()) / f"qlarius-{key}"
    user = _server_user()
    local = project / ".pgdata"
    if (local / "data" / "PG_VERSION").exists():
        base = local
    elif (runtime / "data" / "PG_VERSION").exists():
        base = runtime
    else:
        base = local if _reachable_by(user, project) else runtime
    socket_dir = base / "run"
    if len(str(socket_dir / f".s.PGSQL.{PORT}.lock")) > SOCKET_PATH_LIMIT:
        socket_dir = runtime / "run"
    return EmbeddedCluster(
        bindir=find_bindir(),
        datadir=base / "data",
        socket_dir=socket_dir,
        server_user=user,
        database=settings.embedded_database,
    )


def embedded_server_log(info: str) -> Path | None:
    """The embedded cluster's log file, when ``info`` points at the embedded cluster."""
    try:
        host = pg_conninfo.conninfo_to_dict(info).get("host")
    except psycopg.ProgrammingError:
        return None
    cluster = locate_cluster()
    return cluster.logfile if host == str(cluster.socket_dir) else None


def start(settings: Settings | None = None) -> str:
    """Start the embedded cluster (created on first use); return its conninfo."""
    cluster = locate_cluster(settings)
    start_cluster(cluster)
    return cluster.conninfo


# --- the embedded cluster -------------------------------------------------------------


def _as_server_user(cluster: EmbeddedCluster, args: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", cluster.server_user, "--", *args]
    return args


def _run(
    cluster: EmbeddedCluster, args: list[str], check: bool = True
) -> subprocess.CompletedProcess:
    return subprocess.run(
        _as_server_user(cluster, args), capture_output=True, text=True, check=check, cwd="/"
    )


@contextlib.contextmanager
def _cluster_lock(cluster: EmbeddedCluster) -> Iterator[None]:
    """Serialise start/stop between processes (parallel test runs, several workers)."""
    lock_dir = Path(tempfile.gettempdir())
    lock_name = hashlib.sha256(str(cluster.datadir).encode()).hexdigest()[:12]
    with open(lock_dir / f"qlarius-{lock_name}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _make_dir_for_server(cluster: EmbeddedCluster, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        entry = pwd.getpwnam(cluster.server_user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o700)


def _require_bindir(cluster: EmbeddedCluster) -> Path:
    if cluster.bindir is None:
        raise DatabaseUnavailable(
            "no PostgreSQL server binaries found: install PostgreSQL 14 or newer "
            "(e.g. apt-get install postgresql) or set DATABASE_URL to an existing database"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(cluster.server_user)
        except KeyError as exc:
            raise DatabaseUnavailable(
                f"running as root but there is no '{cluster.server_user}' OS user to run the "
                "server: install the postgresql package or set DATABASE_URL"
            ) from exc
    return cluster.bindir


def is_running(cluster: EmbeddedCluster) -> bool:
    if cluster.bindir is None or not (cluster.datadir / "PG_VERSION").exists():
        return False
    result = _run(
        cluster, [str(cluster.bindir / "pg_ctl"), "status", "-D", str(cluster.datadir)], check=False
    )
    return result.returncode == 0


def _remove_stale_pid_file(cluster: EmbeddedCluster) -> None:
    """A crash can leave postmaster.pid naming a pid that is now another process."""
    pid_file = cluster.datadir / "postmaster.pid"
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        comm = ""
    if comm not in ("postgres", "postmaster"):
        pid_file.unlink(missing_ok=True)


def start_cluster(cluster: EmbeddedCluster) -> None:
    """Create (first use) and start the cluster; harmless when it already runs."""
    bindir = _require_bindir(cluster)
    with _cluster_lock(cluster):
        if not (cluster.datadir / "PG_VERSION").exists():
            _make_dir_for_server(cluster, cluster.datadir.parent)
            _make_dir_for_server(cluster, cluster.datadir)
            result = _run(
                cluster,
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(cluster.datadir),
                    "-U",
                    cluster.server_user,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                ],
                check=False,
            )
            if result.returncode != 0:
                raise DatabaseUnavailable(f"initdb failed: {result.stderr.strip()[-500:]}")
        _make_dir_for_server(cluster, cluster.socket_dir)
        _remove_stale_pid_file(cluster)
        if not is_running(cluster):
            _write_server_config(cluster, get_settings())
            result = _run(
                cluster,
                [
                    str(bindir / "pg_ctl"),
                    "start",
                    "-D",
                    str(cluster.datadir),
                    "-w",
                    "-t",
                    "60",
                    "-l",
                    str(cluster.logfile),
                ],
                check=False,
            )
            if result.returncode != 0 and not is_running(cluster):
                log_tail = ""
                with contextlib.suppress(OSError):
                    log_tail = cluster.logfile.read_text()[-800:]
                raise DatabaseUnavailable(
                    f"could not start the embedded PostgreSQL in {cluster.datadir}: "
                    f"{result.stderr.strip()} {log_tail}".strip()
                )
        _create_database(cluster)


CONFIG_FILE = "qlarius.conf"

# Where a container's memory limit is read (cgroup v2, then v1): a machine's physical memory
# overstates what a container may use.
CGROUP_MEMORY_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)
MIN_SHARED_BUFFERS_MB = 128  # PostgreSQL's own default


def machine_memory_bytes(cgroup_limits: tuple[Path, ...] = CGROUP_MEMORY_LIMITS) -> int:
    """The memory this process may use: the machine's, or its container's limit when lower
    (``max``, or a v1 limit near 2^63, means none)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in cgroup_limits:
        with contextlib.suppress(OSError, ValueError):
            memory = min(memory, int(limit_file.read_text().strip()))
    return memory


def shared_buffers_mb(memory_bytes: int | None = None) -> int:
    """A quarter of the memory, as PostgreSQL's documentation advises for a dedicated server
    ("a reasonable starting value for shared_buffers is 25% of the memory"), never below
    PostgreSQL's default. A fixed 256 MB made the cost of a sync grow with the data rather
    than the work: at 2 million MeFiles each batch read its MeFiles' pages from outside the
    buffer cache (README, "The cost curve"). Memory is only taken as pages are used."""
    memory = machine_memory_bytes() if memory_bytes is None else memory_bytes
    return max(MIN_SHARED_BUFFERS_MB, memory // 4 // (1024 * 1024))


def server_config(cluster: EmbeddedCluster, settings: Settings) -> str:
    """The embedded cluster's settings, in a file of the data folder that postgresql.conf
    includes: an operator's ``ALTER SYSTEM`` (postgresql.auto.conf) still overrides them.
    Durable by default; the one setting that trades durability for speed is opt-in."""
    lines = [
        "# Written by qlarius-jobs at each start of the embedded cluster; do not edit:",
        "# use ALTER SYSTEM (postgresql.auto.conf), which overrides these.",
        "listen_addresses = ''",
        f"unix_socket_directories = '{cluster.socket_dir}'",
        f"port = {cluster.port}",
        "max_connections = 300",
        "# a quarter of the machine's (or container's) memory: shared_buffers_mb()",
        f"shared_buffers = {shared_buffers_mb()}MB",
        "work_mem = 32MB",
        "maintenance_work_mem = 256MB",
        "max_wal_size = 4GB",
        "checkpoint_timeout = 15min",
        "# a client that died (a killed worker) is noticed within 2 s even mid-statement:",
        "# its statement is cancelled and its locks released",
        "client_connection_check_interval = 2s",
        "# pg_stat_activity shows whole statements (the default keeps their first 1 kB)",
        "track_activity_query_size = 8192",
    ]
    if settings.embedded_fast_commit:
        lines += [
            "# QLARIUS_EMBEDDED_FAST_COMMIT=true: a commit returns before its WAL is on disk;",
            "# a server crash can lose the last moments of confirmed work",
            "synchronous_commit = off",
        ]
    return "\n".join(lines) + "\n"


def _write_server_config(cluster: EmbeddedCluster, settings: Settings) -> None:
    """Write qlarius.conf and make postgresql.conf include it (once)."""
    text = server_config(cluster, settings)
    main_conf = cluster.datadir / "postgresql.conf"
    include = f"include_if_exists = '{CONFIG_FILE}'"
    config = cluster.datadir / CONFIG_FILE
    script = (
        f"cat > {shlex.quote(str(config))} <<'QLARIUS_EOF'\n{text}QLARIUS_EOF\n"
        f"grep -qxF {shlex.quote(include)} {shlex.quote(str(main_conf))} || "
        f"printf '%s\\n' {shlex.quote(include)} >> {shlex.quote(str(main_conf))}"
    )
    result = _run(cluster, ["sh", "-c", script], check=False)
    if result.returncode != 0:
        raise DatabaseUnavailable(
            f"could not write {config}: {result.stderr.strip() or result.returncode}"
        )


def _create_database(cluster: EmbeddedCluster) -> None:
    with psycopg.connect(cluster.admin_conninfo(), autocommit=True) as conn:
        if SQL.one_sync(conn, "database_exists", name=cluster.database) is None:
            # Inline, composed: a database name is an identifier, which no query parameter can be.
            conn.execute(
                psycopg.sql.SQL("CREATE DATABASE {}").format(
                    psycopg.sql.Identifier(cluster.database)
                )
            )


def stop_cluster(cluster: EmbeddedCluster, mode: str = "fast") -> bool:
    """Stop the cluster if it runs (``mode``: fast, or immediate: a crash, as pg_ctl means it);
    return whether it was running."""
    if not is_running(cluster):
        return False
    bindir = _require_bindir(cluster)
    with _cluster_lock(cluster):
        _run(
            cluster,
            [str(bindir / "pg_ctl"), "stop", "-D", str(cluster.datadir), "-m", mode, "-w"],
        )
    return True


def restart_cluster(cluster: EmbeddedCluster) -> None:
    """A fast restart (every connection is cut), as an operator would do it."""
    bindir = _require_bindir(cluster)
    with _cluster_lock(cluster):
        _write_server_config(cluster, get_settings())
        _run(
            cluster,
            [
                str(bindir / "pg_ctl"),
                "restart",
                "-D",
                str(cluster.datadir),
                "-m",
                "fast",
                "-w",
                "-l",
                str(cluster.logfile),
            ],
        )
