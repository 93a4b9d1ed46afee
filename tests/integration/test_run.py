"""`qlarius-jobs run` (what `make run` runs): the demo, the workers, and the console beside
them, with its address printed; the log one line per job end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.support import free_port

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_run_shows_the_demo_in_the_console(sync_conn, tmp_path):
    port = free_port()
    log_path = tmp_path / "run.log"
    env = {
        **os.environ,
        "QLARIUS_DEMO_ME_FILES": "300",
        "QLARIUS_WEB_PORT": str(port),
        "QLARIUS_LOG_FORMAT": "json",
    }
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(BIN / "qlarius-jobs"), "run"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        failed = None
        while time.monotonic() < deadline and failed is None:
            time.sleep(0.5)
            try:
                page = httpx.get(base + "/jobs?state=failed", timeout=5)
            except httpx.HTTPError:
                continue
            if "populate_target" in page.text:
                failed = page
        assert failed is not None, log_path.read_text()[-3000:]
        assert httpx.get(base + "/", timeout=10).status_code == 200
        assert "RowId" not in failed.text
        assert "Backfill" in httpx.get(base + "/backfill", timeout=10).text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    output = log_path.read_text()
    assert f"console: http://127.0.0.1:{port}/" in output
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    ends = [e for e in events if "outcome" in e]
    assert ends and all(
        e["event"].endswith(("finished", "failed", "failed, will retry", "aborted")) for e in ends
    )
    assert any(e["outcome"] == "failed" and "target_id" in e["error"] for e in ends)
    assert not [e for e in events if "action" in e], "Procrastinate's per-job events are DEBUG"
    assert not [e for e in events if "egistering" in e["event"]]
