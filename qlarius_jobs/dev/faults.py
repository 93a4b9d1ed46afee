"""Faults: what survives what, measured.

``qlarius-jobs faults`` (``make faults``) and a short version in the tests. Each scenario runs
real ``qlarius-jobs worker`` processes against a throwaway PostgreSQL cluster of its own (so it
can be restarted, crashed and starved freely), and prints its figures:

- restart: ``pg_ctl restart -m fast`` under a worker and a client deferring all the time;
- crash: ``pg_ctl stop -m immediate``, the server back after an outage;
- gone: the server stays away: the worker exits non-zero, with one line, past the limit;
- kill populate / kill backfill: SIGKILL a worker mid-job; the server stops the dead client's
  statement within seconds, the job is rescued and re-run without overlapping;
- connections: ``max_connections`` 20 and two worker processes of pool 40;
- time limit and abort: a populate that ends without success leaves its target as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from qlarius_jobs.api import trigger_population
from qlarius_jobs.db import migrate
from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.dev import embedded, pooler, reference, seed
from qlarius_jobs.dev.processes import NO_BACKFILL_OR_PRUNE, WorkerProcess
from qlarius_jobs.jobs.catalog import defer_job
from qlarius_jobs.ops import controls

SQL = QueryFile.of(__file__)

T = TypeVar("T")


# Whether the scenarios run with a PgBouncer (transaction mode) between the workers and the
# server: set by run_all and the tests, read by throwaway() and Worker.
BEHIND_POOLER: contextvars.ContextVar[bool] = contextvars.ContextVar("behind_pooler", default=False)


@dataclass
class Scenario:
    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if BEHIND_POOLER.get():
            self.name += ", behind PgBouncer"

    def expect(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def line(self) -> str:
        figures = ", ".join(f"{k} {v}" for k, v in self.figures.items())
        verdict = "OK" if not self.problems else "FAILED: " + "; ".join(self.problems)
        return f"{self.name}: {figures} -> {verdict}"


# --- a cluster of its own --------------------------------------------------------------------


class Throwaway:
    """A PostgreSQL cluster in a temporary folder, seeded, for one scenario; behind a
    PgBouncer in transaction mode when ``BEHIND_POOLER`` is set (then ``conninfo``, what
    workers and clients use, goes through it; ``query``, the scenario's own checks, does not)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.bouncer: pooler.PgBouncer | None = None
        self.cluster = embedded.EmbeddedCluster(
            bindir=embedded.find_bindir(),
            datadir=folder / "data",
            socket_dir=folder / "run",
            server_user=embedded._server_user(),
            database="faults",
        )

    @property
    def conninfo(self) -> str:
        if self.bouncer is not None:
            return self.bouncer.conninfo(self.cluster.conninfo)
        return self.cluster.conninfo

    def start(self) -> None:
        embedded.start_cluster(self.cluster)
        if BEHIND_POOLER.get() and self.bouncer is None:
            self.bouncer = pooler.PgBouncer(self.cluster.conninfo)
            self.bouncer.start()

    def restart(self) -> None:
        embedded.restart_cluster(self.cluster)

    def crash(self) -> None:
        embedded.stop_cluster(self.cluster, mode="immediate")

    def stop(self) -> None:
        embedded.stop_cluster(self.cluster)

    def remove(self) -> None:
        """Stop everything (the pooler last: a stopped server leaves it idle) and delete the
        cluster's folder (~70 MB a scenario; every `make test` runs a dozen)."""
        with contextlib.suppress(Exception):
            self.stop()
        if self.bouncer is not None:
            self.bouncer.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def rescue_every(self, cron: str) -> None:
        """The rescue's schedule, for every worker of the scenario."""
        self.query(lambda c: controls.apply_schedules(c, {"rescue_stalled_jobs": cron}, "faults"))

    def query(self, run: Callable[[psycopg.Connection], T]) -> T:
        """``run`` (a named query) on a connection of its own, in autocommit, straight to the
        server: a restart or a crash cuts any connection kept, and the pooler stays out of the
        scenario's own checks."""
        with psycopg.connect(self.cluster.conninfo, autocommit=True) as conn:
            return run(conn)

    def job_status(self, job_id: int | None) -> str:
        row = self.query(lambda c: SQL.one_sync(c, "job_status", job_id=job_id))
        return row["status"] if row else "missing"

    def client_backends(self, application_name: str | None = None) -> int:
        row = self.query(
            lambda c: SQL.one_sync(c, "client_backend_count", application_name=application_name)
        )
        return int(row["n"])

    def prepare(self, **sizes: Any) -> None:
        self.start()
        migrate.migrate(self.cluster.conninfo)
        # no periodic job but the rescue, unless a scenario asks (rescue_every)
        self.query(lambda c: controls.apply_schedules(c, NO_BACKFILL_OR_PRUNE, "faults"))
        # no legacy NULL snapshots unless asked: a scenario checks what its jobs did
        defaults = {"me_files": 300, "targets": 2, "null_share": 0.0}
        seed.seed(self.cluster.conninfo, seed.SeedSizes(**{**defaults, **sizes}))

    def quiet(self) -> bool:
        """Nothing due, running or pending."""
        return not self.query(lambda c: SQL.many_sync(c, "work_due_or_pending"))


@contextlib.contextmanager
def throwaway() -> Any:
    folder = Path(tempfile.mkdtemp(prefix="qlarius-faults-"))
    if os.geteuid() == 0:
        os.chmod(folder, 0o755)  # the server user must reach its folders
    cluster = Throwaway(folder)
    try:
        yield cluster
    finally:
        cluster.remove()


def start_worker(conninfo: str, log: Path, *args: str, **env: str) -> WorkerProcess:
    """``qlarius-jobs worker ARGS`` against the throwaway cluster (behind the pooler when the
    scenario is), output to ``log``; ``env`` adds or overrides settings."""
    settings = {
        "QLARIUS_DATABASE_URL": conninfo,
        "QLARIUS_LOG_FORMAT": "json",
        "QLARIUS_RETRY_BACKOFF_SECONDS": "1",
        **(
            {"QLARIUS_BEHIND_POOLER": "true", "QLARIUS_FETCH_POLLING_SECONDS": "0.5"}
            if BEHIND_POOLER.get()
            else {}
        ),
        **env,
    }
    return WorkerProcess(*args, env={**os.environ, **settings}, log_path=log)


async def wait_for(predicate: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until ``predicate()`` held (polled), or None."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(psycopg.Error):
            if predicate():
                return time.monotonic() - started
        await asyncio.sleep(0.1)
    return None


# --- a client that keeps deferring --------------------------------------------------------


@dataclass
class Client:
    """Defers a cheap real job every few ms; remembers what the server confirmed."""

    conninfo: str
    band_id: int
    confirmed: list[int] = field(default_factory=list)
    refused: int = 0

    async def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, connect_timeout=2, prepare_threshold=None
                ) as conn:
                    while time.monotonic() < deadline:
                        job = await defer_job(
                            conn, "snapshot_band_populations", band_id=self.band_id
                        )
                        if job is not None:
                            self.confirmed.append(job)
                        await asyncio.sleep(0.02)
            except psycopg.Error:
                self.refused += 1
                await asyncio.sleep(0.1)


def _settled(cluster: Throwaway, ids: list[int]) -> tuple[int, int]:
    """(confirmed jobs missing from the table, confirmed jobs not succeeded)."""
    rows = {
        r["id"]: r["status"]
        for r in cluster.query(lambda c: SQL.many_sync(c, "job_statuses", job_ids=ids))
    }
    return (
        sum(1 for i in ids if i not in rows),
        sum(1 for i in ids if rows.get(i) != "succeeded"),
    )


async def _outage(folder: Path, name: str, *, crash_for: float | None, load: float) -> Scenario:
    """A worker and a deferring client; the server restarts (or crashes and comes back)."""
    scenario = Scenario(name)
    with throwaway() as cluster:
        cluster.prepare()
        band = cluster.query(lambda c: SQL.one_sync(c, "first_band"))["band_id"]
        worker = start_worker(cluster.conninfo, folder / f"{name}.log")
        client = Client(cluster.conninfo, band)
        load_task = asyncio.create_task(client.run(load))
        await asyncio.sleep(2)
        succeeded_before = [
            r["id"] for r in cluster.query(lambda c: SQL.many_sync(c, "succeeded_job_ids"))
        ]
        if crash_for is None:
            await asyncio.to_thread(cluster.restart)
        else:
            await asyncio.to_thread(cluster.crash)
            await asyncio.sleep(crash_for)
            await asyncio.to_thread(cluster.start)
        back_at = cluster.query(lambda c: SQL.one_sync(c, "server_now"))["now"]
        flow = await wait_for(
            lambda: bool(
                cluster.query(lambda c: SQL.many_sync(c, "jobs_succeeded_since", since=back_at))
            ),
            60,
        )
        await load_task
        settle = await wait_for(lambda: _settled(cluster, client.confirmed)[1] == 0, 90)
        lost, unsettled = _settled(cluster, client.confirmed)
        rerun = cluster.query(
            lambda c: SQL.one_sync(
                c, "jobs_started_again_since", since=back_at, job_ids=succeeded_before
            )
        )["n"]
        stuck = cluster.query(lambda c: SQL.one_sync(c, "stuck_job_count"))["n"]
        alive = worker.alive
        worker.stop()
        code = worker.returncode
        scenario.figures = {
            "jobs flow again after (s)": None if flow is None else round(flow, 1),
            "confirmed deferrals": len(client.confirmed),
            "confirmed deferrals lost": lost,
            "succeeded jobs run again": rerun,
            "jobs stuck": stuck + unsettled,
            "refused while down": client.refused,
            "worker restarted": not alive,
            "worker exit on SIGTERM": code,
        }
        scenario.expect(flow is not None and flow <= 10, "jobs did not flow again within 10 s")
        scenario.expect(lost == 0, f"{lost} confirmed deferrals lost")
        scenario.expect(rerun == 0, f"{rerun} succeeded jobs ran again")
        scenario.expect(stuck + unsettled == 0 and settle is not None, "jobs stuck")
        scenario.expect(alive, "the worker process did not survive")
        scenario.expect(code == 0, f"the worker exited {code} on SIGTERM")
    return scenario


async def restart(folder: Path, short: bool) -> Scenario:
    return await _outage(folder, "restart (pg_ctl restart -m fast)", crash_for=None, load=8)


async def crash(folder: Path, short: bool) -> Scenario:
    outage = 5.0 if short else 20.0
    return await _outage(
        folder, f"crash (stop -m immediate, back after {outage:g} s)", crash_for=outage, load=12
    )


async def gone(folder: Path, short: bool) -> Scenario:
    """The server stays away: the worker gives up past the limit, non-zero, one line."""
    limit = 4.0 if short else 30.0
    scenario = Scenario(f"gone (server down past the {limit:g} s limit)")
    with throwaway() as cluster:
        cluster.prepare()
        worker = start_worker(
            cluster.conninfo,
            folder / "gone.log",
            QLARIUS_DATABASE_OUTAGE_LIMIT_SECONDS=str(limit),
            QLARIUS_HEARTBEAT_SECONDS="1",
        )
        await asyncio.sleep(2)
        await asyncio.to_thread(cluster.stop)
        exited = await wait_for(lambda: not worker.alive, limit + 60)
        worker.stop()
        code = worker.returncode
        last = worker.last_line()
        scenario.figures = {
            "exited after (s)": None if exited is None else round(exited, 1),
            "exit code": code,
            "last line": last[:160],
        }
        scenario.expect(exited is not None, "the worker never exited")
        scenario.expect(code not in (0, None), f"exit code {code}")
        scenario.expect("unreachable" in last, "no one-line reason as the last line")
    return scenario


async def kill_populate(folder: Path, short: bool) -> Scenario:
    """SIGKILL a worker while its populate waits on a row: the server ends the dead client's
    statement within seconds; the rescued run never overlaps it and gets the target right."""
    scenario = Scenario("kill -9 mid-populate")
    fast = {"QLARIUS_HEARTBEAT_SECONDS": "1", "QLARIUS_STALLED_AFTER_SECONDS": "5"}
    rescue = fast if short else {}
    with throwaway() as cluster:
        cluster.prepare()
        target = cluster.query(lambda c: SQL.one_sync(c, "first_target"))["target_id"]
        # stale snapshots for the populate to refresh, one of them held by this connection
        cluster.query(
            lambda c: SQL.execute_sync(c, "make_target_snapshots_stale", target_id=target)
        )
        # a population row the populate must insert, being inserted by this connection: the
        # one wait a populate keeps (rows held elsewhere are skipped, not waited for)
        missing = cluster.query(
            lambda c: SQL.one_sync(c, "take_first_population", target_id=target)
        )
        held = psycopg.connect(cluster.conninfo)
        SQL.execute_sync(
            held,
            "insert_population",
            target_band_id=missing["target_band_id"],
            me_file_id=missing["me_file_id"],
        )
        doomed = start_worker(
            cluster.conninfo, folder / "populate-doomed.log", "--queues", "targets", **fast
        )
        async with await psycopg.AsyncConnection.connect(cluster.conninfo) as conn:
            job = await defer_job(conn, "populate_target", target_id=target)
            await conn.commit()
        waiting = await wait_for(
            lambda: bool(
                cluster.query(lambda c: SQL.many_sync(c, "backends_waiting_on_populations"))
            ),
            30,
        )
        backend = cluster.query(lambda c: SQL.many_sync(c, "backends_waiting_on_populations"))
        doomed.kill()
        killed_at = time.monotonic()
        pid = backend[0]["pid"] if backend else None
        ended = await wait_for(
            lambda: cluster.query(lambda c: SQL.one_sync(c, "backend_exists", pid=pid)) is None, 30
        )
        held.rollback()
        held.close()
        if short:
            cluster.rescue_every("* * * * * */2")
        rescuer = start_worker(
            cluster.conninfo,
            folder / "populate-rescuer.log",
            "--queues",
            "targets,offers,maintenance",
            **rescue,
        )
        done = await wait_for(lambda: cluster.job_status(job) == "succeeded", 150)
        rescued_after = None if done is None else round(time.monotonic() - killed_at, 1)
        await wait_for(cluster.quiet, 60)
        rescuer.stop()
        with psycopg.connect(cluster.conninfo) as conn:
            found = reference.check(conn)
            violations = found.total()
        errors = cluster.query(lambda c: SQL.many_sync(c, "job_error_types", job_id=job))
        scenario.figures = {
            "killed backend's statement ended after (s)": None
            if ended is None
            else round(ended, 1),
            "rescued and done after (s)": rescued_after,
            "attempts recorded": [e["error_type"] for e in errors],
            "violations": violations,
        }
        if violations:
            scenario.figures["examples"] = found.examples[:3]
        scenario.expect(waiting is not None and pid is not None, "the populate never ran")
        scenario.expect(ended is not None and ended <= 5, "the dead client's statement ran on")
        scenario.expect(done is not None and rescued_after <= 90, "not rescued within 90 s")
        scenario.expect(violations == 0, f"{violations} invariant violations")
    return scenario


async def kill_backfill(folder: Path, short: bool) -> Scenario:
    """SIGKILL one of two workers while a chunked backfill runs: nothing lost, nothing counted
    twice, the run finishes."""
    scenario = Scenario("kill -9 mid-backfill (2 workers, chunks)")
    env = {
        "QLARIUS_HEARTBEAT_SECONDS": "1",
        "QLARIUS_STALLED_AFTER_SECONDS": "5",
        "QLARIUS_BACKFILL_CHUNK_SIZE": "100",
        "QLARIUS_BACKFILL_BATCH_SIZE": "20",
        "QLARIUS_AUDIT_SAMPLE_SIZE": "0",
    }
    with throwaway() as cluster:
        cluster.prepare(me_files=600, null_share=0.5)
        cluster.query(lambda c: SQL.execute_sync(c, "clear_pending_changes"))
        found = cluster.query(lambda c: SQL.one_sync(c, "null_snapshot_count"))["n"]
        cluster.rescue_every("* * * * * */2")
        workers = [
            start_worker(
                cluster.conninfo, folder / f"backfill-{i}.log", "--queues", "maintenance=2", **env
            )
            for i in range(2)
        ]
        await asyncio.sleep(2)
        async with await psycopg.AsyncConnection.connect(cluster.conninfo, autocommit=True) as c:
            await defer_job(c, "backfill_missing_snapshots")
        started = await wait_for(
            lambda: bool(cluster.query(lambda c: SQL.many_sync(c, "backfill_chunks_succeeded"))),
            60,
        )
        workers[0].kill()
        finished = await wait_for(
            lambda: (
                cluster.query(lambda c: SQL.one_sync(c, "backfill_runs_finished"))["finished"]
                is True
            ),
            120,
        )
        workers[1].stop()
        outcome = cluster.query(lambda c: SQL.one_sync(c, "backfill_outcome"))
        left, orphans, updated, failed = (
            outcome["left_over"],
            outcome["orphans"],
            outcome["updated"],
            outcome["failed"],
        )
        scenario.figures = {
            "NULL snapshots found": found,
            "fixed": int(updated or 0),
            "orphans": int(orphans or 0),
            "left": left,
            "chunks failed": int(failed or 0),
            "run finished": finished is not None,
        }
        scenario.expect(started is not None, "no chunk ever ran")
        if finished is None:
            listing = cluster.query(lambda c: SQL.many_sync(c, "backfill_runs_listing"))
            scenario.expect(False, f"the run never finished: {listing}")
        scenario.expect(left == 0, f"{left} NULL snapshots a population explains were left")
        scenario.expect(
            int(updated or 0) + int(orphans or 0) <= found, "rows counted twice in the history"
        )
    return scenario


async def connections(folder: Path, short: bool) -> Scenario:
    """max_connections 20, two worker processes asking for 40 each: both fit or say so, the
    reserved slots stay free for an operator, jobs flow, idle connections go back."""
    scenario = Scenario("out of connections (max_connections 20, two workers of pool 40)")
    with throwaway() as cluster:
        cluster.prepare()
        cluster.query(lambda c: SQL.execute_sync(c, "cap_max_connections"))
        await asyncio.to_thread(cluster.restart)
        env = {"QLARIUS_POOL_MAX_IDLE_SECONDS": "2"}
        first = start_worker(
            cluster.conninfo, folder / "conn-1.log", "--queues", "default,targets", **env
        )
        await asyncio.sleep(3)
        second = start_worker(
            cluster.conninfo, folder / "conn-2.log", "--queues", "default,targets", **env
        )
        await asyncio.sleep(3)
        operator = True
        try:
            with psycopg.connect(cluster.conninfo) as conn:
                SQL.one_sync(conn, "operator_probe")
        except psycopg.Error:
            operator = False
        band = cluster.query(lambda c: SQL.one_sync(c, "first_band"))["band_id"]
        client = Client(cluster.conninfo, band)
        mine = f"qlarius-jobs:{first.pid}"
        floor = 2 + 1 + 1  # its LISTEN connections (2 queues + wake-ups), its pool's minimum
        # A burst whose jobs all wait on the target_bands table, each holding a pooled connection:
        # the first worker's pool grows to its targets queue's concurrency (5), then idles.
        with psycopg.connect(cluster.conninfo) as holder:
            SQL.execute_sync(holder, "hold_target_bands_table")
            load = asyncio.create_task(client.run(3))
            # Counted through wait_for, which rides out a refused connection: the burst, the
            # second worker, the holder and the client can fill max_connections for a moment.
            seen: list[int] = []

            def count() -> int:
                seen.append(cluster.client_backends(mine))
                return seen[-1]

            await wait_for(lambda: count() >= floor + 4, 20)
            await asyncio.sleep(2)  # the rest of the burst's connections
            await wait_for(lambda: count() >= 0, 5)  # one more count, as soon as one succeeds
            busy = max(seen, default=0)
            holder.rollback()
        await load
        settled = await wait_for(lambda: _settled(cluster, client.confirmed)[1] == 0, 60)
        # The pool closes one unused connection per QLARIUS_POOL_MAX_IDLE_SECONDS (2 s) down
        # to what its background work uses at once (schedules, drains, fetches, heartbeats of
        # two queues: two or three at the same moment, more on a loaded machine).
        released = await wait_for(lambda: count() <= floor + 2, 40)
        idle = seen[-1] if seen else -1
        first_text = first.output()
        second_alive = second.alive
        first.stop()
        second.stop()
        codes = (first.returncode, second.returncode)
        capped = "connection pool capped" in first_text
        scenario.figures = {
            "first worker capped its pool": capped,
            "second worker": "ran"
            if second_alive
            else f"exited {codes[1]}: " + second.last_line()[:120],
            "operator could connect": operator,
            "jobs flowed": settled is not None,
            "first worker's connections busy -> idle": f"{busy} -> {idle} (floor {floor})",
            "released in": "never" if released is None else f"{released:.1f} s",
        }
        scenario.expect(capped, "the first worker took more than the free connections")
        scenario.expect(second_alive or codes[1] not in (0, None), "the second worker exited 0")
        scenario.expect(operator, "an operator could not connect")
        scenario.expect(settled is not None, "jobs did not flow")
        scenario.expect(busy >= floor + 4, "the burst did not grow the pool")
        scenario.expect(released is not None, "idle connections were not released")
    return scenario


async def time_limit_and_abort(folder: Path, short: bool) -> Scenario:
    """A populate past its time limit (every attempt), and one aborted by an operator: the
    target's status goes back, and each attempt has its error history row."""
    scenario = Scenario("populate timed out / aborted")
    with throwaway() as cluster:
        cluster.prepare()
        target = cluster.query(lambda c: SQL.one_sync(c, "first_target"))["target_id"]
        worker = start_worker(
            cluster.conninfo,
            folder / "limits.log",
            "--queues",
            "targets",
            QLARIUS_TASK_TIMEOUTS=json.dumps({"populate_target": 1}),
            QLARIUS_RETRY_BACKOFF_SECONDS="0",
        )
        results: dict[str, Any] = {}
        for ending in ("time limit", "abort"):
            held = psycopg.connect(cluster.conninfo)
            SQL.execute_sync(held, "hold_target_populations_scope", target_id=target)
            async with await psycopg.AsyncConnection.connect(cluster.conninfo) as conn:
                job = await trigger_population(conn, target)
                await conn.commit()
            if ending == "abort":
                await wait_for(lambda job=job: cluster.job_status(job) == "doing", 30)
                cluster.query(lambda c, job=job: SQL.execute_sync(c, "abort_job", job_id=job))
            await wait_for(lambda job=job: cluster.job_status(job) in ("failed", "aborted"), 60)
            held.rollback()
            held.close()
            status = cluster.query(
                lambda c: SQL.one_sync(c, "target_population_status", target_id=target)
            )
            errors = cluster.query(
                lambda c, job=job: SQL.many_sync(c, "job_error_types", job_id=job)
            )
            results[ending] = (status["population_status"], [e["error_type"] for e in errors])
        worker.stop()
        scenario.figures = {
            f"{k}: status, history": f"{v[0]}, {'/'.join(v[1])}" for k, v in results.items()
        }
        scenario.expect(
            results["time limit"] == ("populated", ["JobTimeout"] * 3),
            f"time limit: {results['time limit']}",
        )
        scenario.expect(
            results["abort"][0] == "populated" and results["abort"][1][-1:] == ["JobAborted"],
            f"abort: {results['abort']}",
        )
    return scenario


SCENARIOS = (restart, crash, gone, kill_populate, kill_backfill, connections, time_limit_and_abort)
# Behind a pooler the same, but for the connections one: there the pooler's pool size, not the
# worker, decides how many server connections the workers take.
POOLED_SCENARIOS = tuple(s for s in SCENARIOS if s is not connections)


async def run_all(short: bool, folder: Path | None = None) -> list[Scenario]:
    """Every scenario directly, then every pooled one behind PgBouncer."""
    folder = folder or Path(tempfile.mkdtemp(prefix="qlarius-faults-logs-"))
    results = []
    for pooled, scenarios in ((False, SCENARIOS), (True, POOLED_SCENARIOS)):
        token = BEHIND_POOLER.set(pooled)
        try:
            for scenario in scenarios:
                results.append(await scenario(folder, short))
                print(results[-1].line(), flush=True)
        finally:
            BEHIND_POOLER.reset(token)
    return results


def main(short: bool = False) -> int:
    """``qlarius-jobs faults``: every scenario; exits 1 when any failed."""
    folder = Path(tempfile.mkdtemp(prefix="qlarius-faults-logs-"))
    results = asyncio.run(run_all(short, folder))
    print(f"worker logs: {folder}")
    return 0 if all(not s.problems for s in results) else 1
