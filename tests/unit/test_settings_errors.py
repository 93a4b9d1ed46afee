"""A bad setting is refused before anything starts: one line per bad setting (its name, its
value, what is allowed), exit status 2. No database is needed to be told."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "qlarius_jobs.cli"]
# Nothing listens there: a command that got past the settings would fail differently.
NOWHERE = "postgresql://nobody@127.0.0.1:9/none?connect_timeout=1"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env={**os.environ, "QLARIUS_DATABASE_URL": NOWHERE, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"QLARIUS_BACKFILL_CRON": "banana"},
            "invalid setting QLARIUS_BACKFILL_CRON='banana': 'banana' is not a cron expression",
        ),
        ({"QLARIUS_BACKFILL_CRON": "0 0 31 2 *"}, "QLARIUS_BACKFILL_CRON='0 0 31 2 *': "),
        ({"QLARIUS_QUEUES": ""}, "invalid setting QLARIUS_QUEUES='': '' is not queue=concurrency"),
        ({"QLARIUS_QUEUES": "=nope=1"}, "QLARIUS_QUEUES='=nope=1': '=nope=1' is not"),
        ({"QLARIUS_QUEUES": "targets=0"}, "concurrency must be a positive integer"),
        (
            {"QLARIUS_RETRY_BACKOFF_SECONDS": "inf"},
            "invalid setting QLARIUS_RETRY_BACKOFF_SECONDS='inf': Input should be a finite number",
        ),
        (
            {"QLARIUS_TASK_TIMEOUTS": '{"populate_target": -1}'},
            "populate_target: a time limit must be a positive number of seconds",
        ),
        (
            {"QLARIUS_TASK_TIMEOUTS": "{bad"},
            "invalid setting QLARIUS_TASK_TIMEOUTS: not valid JSON",
        ),
        ({"QLARIUS_LOG_FORMAT": "xml"}, "QLARIUS_LOG_FORMAT='xml': Input should be 'auto'"),
        (
            {"QLARIUS_HEARTBEAT_SECONDS": "4", "QLARIUS_STALLED_AFTER_SECONDS": "3"},
            "invalid setting QLARIUS_STALLED_AFTER_SECONDS='3': must be at least twice "
            "QLARIUS_HEARTBEAT_SECONDS (4)",
        ),
        ({"QLARIUS_POOL_MAX_SIZE": "abc"}, "QLARIUS_POOL_MAX_SIZE='abc': Input should be a valid"),
    ],
)
@pytest.mark.parametrize("command", [["status"], ["worker"]])
def test_a_bad_setting_is_one_line_and_exit_2(env, line, command):
    run = _run(*command, **env)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and line in lines[0] and lines[0].startswith("qlarius-jobs: "), lines
    assert "Traceback" not in run.stderr


def test_two_bad_settings_are_two_lines():
    run = _run("status", QLARIUS_LOG_FORMAT="xml", QLARIUS_POOL_MAX_SIZE="abc")
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 2 and all(
        line.startswith("qlarius-jobs: invalid setting") for line in lines
    )


def test_an_unknown_queue_is_refused_listing_the_known_ones():
    run = _run("worker", "--queues", "targets,nosuch")
    assert run.returncode == 2
    assert run.stderr.strip() == (
        "qlarius-jobs: unknown queue 'nosuch'; the queues are: default, maintenance, offers, targets"
    )


def test_help_has_no_markup_and_every_option_says_what_it_does():
    for command in ([], ["seed"], ["bench"], ["db"], ["storm"], ["jobs", "list"], ["worker"]):
        run = subprocess.run([*CLI, *command, "--help"], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0
        assert "``" not in run.stdout
        options = [
            ln for ln in run.stdout.splitlines() if ln.startswith("  -") and "--help" not in ln
        ]
        for option in options:
            words = option.split()
            # an option line either carries its help, or the help follows on the next line
            assert len(words) > 2 or run.stdout.split(option, 1)[1].startswith("\n      "), option
