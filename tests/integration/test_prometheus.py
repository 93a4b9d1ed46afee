"""A real Prometheus scraping the console's /metrics every second: the counters and the
histogram kept in the database (migration 0017) give the right rate(), increase() and
histogram_quantile() for the jobs the test ran, and promtool finds the text clean."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from qlarius_jobs.ops import console
from tests.integration.support import TEST_DB, free_port
from tests.integration.test_metrics import end_job

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
TASK = "snapshot_band_populations"  # queue 'targets'


@pytest.fixture(autouse=True, scope="module")
def prometheus_installed() -> None:
    """A real Prometheus or a failure saying so, never a skip."""
    if not Path(PROMETHEUS).exists():
        pytest.fail("no prometheus on this machine: apt-get install prometheus (.ci/run does)")


@pytest.fixture
def console_port() -> Iterator[int]:
    """The console served by uvicorn on a free port, in a thread."""
    port = free_port()
    config = console.ConsoleConfig(conninfo=TEST_DB.conninfo, port=port)
    server = console.server(console.build_console(config), "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def prometheus(console_port: int, tmp_path: Path) -> Iterator[str]:
    """Prometheus scraping the console every second (storage in tmp_path); its API's URL."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: qlarius\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{console_port}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def query(api: str, promql: str) -> list[dict]:
    url = f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def value(api: str, promql: str) -> float | None:
    result = query(api, promql)
    return float(result[0]["value"][1]) if result else None


def wait_for(api: str, promql: str, timeout: float = 15) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = value(api, promql)
        except OSError:  # not listening yet
            found = None
        if found is not None:
            return found
        time.sleep(0.2)
    raise AssertionError(f"Prometheus never answered {promql}")


def test_rate_increase_and_quantiles_through_a_real_prometheus(prometheus, sync_conn):
    api = prometheus
    series = f'{{task="{TASK}",outcome="succeeded"}}'
    # the counter's zero series, scraped at least twice before any job ends
    wait_for(api, f"count_over_time(qlarius_job_outcomes_total{series}[1m]) >= 2")
    assert value(api, "qlarius_database_up") == 1.0
    for seconds in [0.3] * 10 + [3.0] * 10:  # ten in (0.1, 0.5], ten in (1, 5]
        end_job(sync_conn, TASK, "targets", "succeeded", seconds)
    for _ in range(3):
        end_job(sync_conn, TASK, "targets", "failed", 0.02)
    wait_for(api, f"qlarius_job_outcomes_total{series} == 20")
    time.sleep(1.2)  # one more scrape, so that the end of the window holds the value too

    assert value(api, f"qlarius_job_outcomes_total{series}") == 20.0
    increase = value(api, f"increase(qlarius_job_outcomes_total{series}[10s])")
    # Prometheus extrapolates the samples' delta (20) to the whole window: by 10/9 with
    # on-time scrapes every second, more when a loaded machine delays them (10/8 if the samples
    # span only 8 of the 10 s); never under the delta itself.
    assert 19.5 <= increase <= 25.0, increase
    rate = value(api, f"rate(qlarius_job_outcomes_total{series}[10s])")
    assert rate == pytest.approx(increase / 10, rel=0.01)
    failed = value(
        api, f'sum(increase(qlarius_job_outcomes_total{{task="{TASK}",outcome="failed"}}[10s]))'
    )
    assert 2.9 <= failed <= 3.5, failed

    print(f"increase[10s] {increase:.3f}, rate[10s] {rate:.3f}/s, failed {failed:.3f}")
    buckets = f"qlarius_job_duration_seconds_bucket{series}"
    # rank 10 of 20 is the top of (0.1, 0.5]; rank 18 is 8/10 of the way into (1, 5]
    assert value(api, f"histogram_quantile(0.5, {buckets})") == pytest.approx(0.5)
    assert value(api, f"histogram_quantile(0.9, {buckets})") == pytest.approx(4.2)
    over_rate = value(api, f"histogram_quantile(0.9, rate({buckets}[10s]))")
    assert over_rate == pytest.approx(4.2)
    mean = value(
        api,
        f"qlarius_job_duration_seconds_sum{series} / qlarius_job_duration_seconds_count{series}",
    )
    assert mean == pytest.approx(1.65, abs=0.05)

    # and the text Prometheus scraped is clean by promtool's lint
    target = query(api, "up")
    assert [float(t["value"][1]) for t in target] == [1.0]
    port = target[0]["metric"]["instance"].split(":")[-1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        body = r.read().decode()
    promtool = shutil.which("promtool")
    if promtool:
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), (
            checked.stdout + checked.stderr
        )
