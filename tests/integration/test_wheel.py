"""The wheel carries the project's SQL (``sql/`` at the top of the checkout): built from this
checkout, installed into a fresh virtual environment outside it, it migrates a fresh database
and runs a job, with no file of the checkout in reach."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo as pg_conninfo
from psycopg import sql

from tests.integration.support import TEST_DB

CHECKOUT = Path(__file__).resolve().parents[2]
NAME = f"{pg_conninfo.conninfo_to_dict(TEST_DB.conninfo)['dbname']}_wheel"


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=240, **kwargs)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture
def fresh_database():
    admin = pg_conninfo.make_conninfo(TEST_DB.conninfo, dbname="postgres")
    ident = sql.Identifier(NAME)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    yield pg_conninfo.make_conninfo(TEST_DB.conninfo, dbname=NAME)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


@pytest.mark.slow
def test_the_wheel_installed_elsewhere_migrates_and_runs_a_job(tmp_path, fresh_database):
    # build (hatchling is a dev dependency: no download, no isolation needed)
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--wheel-dir",
        str(tmp_path / "dist"),
        str(CHECKOUT),
    )
    (wheel,) = (tmp_path / "dist").glob("qlarius_jobs-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "qlarius_jobs/_sql/monitoring.sql" in names
    assert "qlarius_jobs/_sql/queries/jobs/populations.sql" in names
    assert any(n.startswith("qlarius_jobs/_sql/migrations/0001_") for n in names)

    # a fresh environment, outside the checkout: the wheel itself, and the dependencies this
    # one already has (a path entry, so the checkout's editable-install hook is not run)
    env_dir = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", str(env_dir))
    bin_dir = env_dir / "bin"
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(bin_dir / "python"),
        "install",
        "--quiet",
        "--no-deps",
        str(wheel),
    )
    (fresh_site,) = (env_dir / "lib").glob("python*/site-packages")
    (fresh_site / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("QLARIUS_", "PYTHON", "VIRTUAL_ENV"))
    }
    env |= {"QLARIUS_DATABASE_URL": fresh_database, "QLARIUS_LOG_FORMAT": "json"}
    where = _run(
        str(bin_dir / "python"),
        "-c",
        "import qlarius_jobs, pathlib; print(pathlib.Path(qlarius_jobs.__file__).parent)",
        cwd=work,
        env=env,
    )
    assert Path(where.stdout.strip()).is_relative_to(env_dir)  # not the checkout's

    _run(str(bin_dir / "qlarius-jobs"), "migrate", cwd=work, env=env)
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        migrated = conn.execute("SELECT count(*) FROM qlarius_schema_migrations").fetchone()[0]
        assert migrated == len(list((CHECKOUT / "sql" / "migrations").glob("*.sql")))
        assert conn.execute("SELECT count(*) FROM qlarius_pending_work").fetchone()[0] == 4
        target = conn.execute(
            "INSERT INTO targets (title) VALUES ('from the wheel') RETURNING id"
        ).fetchone()[0]
    _run(
        str(bin_dir / "python"),  # the procrastinate command of the fresh environment's
        "-m",  # Python: its console script belongs to the dependencies' environment
        "procrastinate",
        "--app=qlarius_jobs.app.app",
        "defer",
        "populate_target",
        json.dumps({"target_id": target}),
        cwd=work,
        env=env,
    )
    _run(
        str(bin_dir / "qlarius-jobs"),
        "worker",
        "--queues",
        "targets",
        "--until-empty",
        cwd=work,
        env=env,
    )
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        status = conn.execute(
            "SELECT status::text FROM procrastinate_jobs WHERE task_name = 'populate_target'"
        ).fetchall()
        populated = conn.execute(
            "SELECT population_status FROM targets WHERE id = %s", (target,)
        ).fetchone()[0]
    assert status == [("succeeded",)]
    assert populated == "populated"
