"""Procrastinate's internals, reached only through ``worker/procrastinate_adapter.py``: this
fails on a Procrastinate version lacking any of them, and when code elsewhere reaches one."""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import tomllib
from pathlib import Path

import procrastinate
import psycopg_pool.base
from procrastinate import exceptions, manager, schema, testing
from procrastinate import worker as procrastinate_worker

from qlarius_jobs.worker import procrastinate_adapter as adapter

PACKAGE = Path(adapter.__file__).resolve().parents[1]
ROOT = PACKAGE.parent
PRIVATE = re.compile(
    r"_running_jobs|_new_job_event|Job\.from_row|AttemptWithBackoff|connector\.pool\b|_pool_args"
    r"|_async_pool|_sync_connector"
)
VERSIONED = re.compile(r"\bprocrastinate_[a-z_]+_v\d+\b")


def _in_memory_app() -> procrastinate.App:
    return procrastinate.App(connector=testing.InMemoryConnector())


def test_the_private_names_exist_in_this_procrastinate():
    app = _in_memory_app()
    worker = procrastinate_worker.Worker(app=app, queues=["q"])
    assert isinstance(worker._running_jobs, dict)
    assert not worker._new_job_event.is_set()
    adapter.wake(worker)
    assert worker._new_job_event.is_set()
    job = adapter.job_from_row(
        {
            "id": 7,
            "status": "doing",
            "priority": 0,
            "lock": None,
            "queueing_lock": None,
            "task_name": "t",
            "args": {"a": 1},
            "scheduled_at": None,
            "queue_name": "q",
            "attempts": 0,
            "worker_id": 3,
        }
    )
    assert (job.id, job.queue, job.task_kwargs, job.worker_id) == (7, "q", {"a": 1}, 3)
    assert adapter.running_job_attempts([worker], 1) == {}
    assert isinstance(psycopg_pool.base.AttemptWithBackoff.DELAY_BACKOFF, float)
    connector = procrastinate.PsycopgConnector(kwargs={"application_name": "x"})
    assert adapter.pool_kwargs(procrastinate.App(connector=connector)) == {"application_name": "x"}
    assert not adapter.is_open(procrastinate.App(connector=connector))
    violation = exceptions.UniqueViolation(constraint_name="c", queueing_lock="lock")
    try:
        try:
            raise violation
        except exceptions.UniqueViolation as exc:
            raise exceptions.AlreadyEnqueued() from exc
    except exceptions.AlreadyEnqueued as refused:
        assert adapter.refused_queueing_lock(refused) == "lock"
    assert adapter.QUEUEING_LOCK_INDEX == manager.QUEUEING_LOCK_CONSTRAINT


def _body_as_tested(function: str, md5: str, ours: str) -> str:
    """The text of one of Procrastinate's SQL functions that ours repeats, checked to be the
    text of the tested release: one that changes it needs ``ours`` looked at."""
    text = schema.SchemaManager.get_schema()
    body = re.search(rf"CREATE FUNCTION {function}\(.*?\$\$(.*?)\$\$", text, re.S)
    assert body is not None
    assert hashlib.md5(body[1].encode()).hexdigest() == md5, (
        f"{function} changed: bring {ours} up to date, then its MD5 in procrastinate_adapter.py"
    )
    return body[1]


def test_the_fetch_our_workers_repeat_is_procrastinates_fetch_as_tested():
    """qlarius_fetch_job (sql/migrations/0016, as the latest migration defining it left it) is
    Procrastinate's fetch with paused queues and tasks left out (and, asked to, the jobs that
    leave a queue's last slot free)."""
    body = _body_as_tested(
        adapter.FETCH_FUNCTION, adapter.FETCH_FUNCTION_MD5, "qlarius_fetch_job (a migration)"
    )
    defining = [
        path
        for path in sorted((ROOT / "sql/migrations").glob("*.sql"))
        if "FUNCTION qlarius_fetch_job(" in path.read_text()
    ]
    ours = defining[-1].read_text()
    assert defining[-1].name == "0029_a_slot_kept_for_the_drains.sql"
    for line in ("FOR UPDATE OF jobs SKIP LOCKED", "ORDER BY jobs.priority DESC, jobs.id ASC"):
        assert line in body and line in ours


def test_the_heartbeat_our_workers_repeat_is_procrastinates_as_tested():
    """heartbeat_of_worker is Procrastinate's heartbeat, and registers a worker again if a
    rescue removed its row."""
    body = _body_as_tested(
        adapter.HEARTBEAT_FUNCTION, adapter.HEARTBEAT_FUNCTION_MD5, "heartbeat_of_worker"
    )
    ours = (ROOT / "sql/queries/worker/resilience.sql").read_text()
    assert "SET last_heartbeat = NOW()" in body
    assert (
        "UPDATE procrastinate_workers SET last_heartbeat = now() WHERE id = %(worker_id)s" in ours
    )


def test_the_sql_functions_and_columns_we_use_exist_in_its_schema():
    text = schema.SchemaManager.get_schema()
    for function in adapter.SQL_FUNCTIONS:
        assert re.search(rf"CREATE FUNCTION {function}\(", text), function
    table = re.search(r"CREATE TABLE procrastinate_jobs \((.*?)\n\);", text, re.S)
    assert table is not None
    columns = {line.split()[0] for line in table[1].splitlines() if line.strip()}
    assert set(adapter.JOB_COLUMNS) <= columns, set(adapter.JOB_COLUMNS) - columns
    assert adapter.QUEUEING_LOCK_INDEX in text


def test_our_sql_calls_no_versioned_function_the_adapter_does_not_list():
    used = {
        name
        for path in [*(ROOT / "sql").rglob("*.sql"), *PACKAGE.rglob("*.py")]
        for name in VERSIONED.findall(path.read_text())
        if not name.startswith("procrastinate_jobs")
    }
    # the fetch and the heartbeat: repeated, not called
    known = {*adapter.SQL_FUNCTIONS, adapter.FETCH_FUNCTION, adapter.HEARTBEAT_FUNCTION}
    assert used <= known, used - known


def test_nothing_else_reaches_procrastinates_private_names():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "procrastinate_adapter.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if PRIVATE.search(line)
    ]
    assert offenders == []


def test_procrastinate_is_pinned_to_the_minor_release_tested():
    installed = importlib.metadata.version("procrastinate")
    major, minor = (int(p) for p in installed.split(".")[:2])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    [spec] = [d for d in project["project"]["dependencies"] if d.startswith("procrastinate")]
    assert spec == f"procrastinate>={major}.{minor},<{major}.{minor + 1}", spec
