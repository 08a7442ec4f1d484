"""A fresh ``django-admin startproject`` with lockwatch added as README says.

lockwatch never stops a deploy: an unwritable store is a warning, its events are counted as
lost, and migrate, check and runserver run. Its advice on the database's configuration waits
for ``check --deploy`` (and ``lockwatch doctor --settings``) instead of printing on every
command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import ROOT
from tests.support.net import free_port

README = (ROOT / "README.md").read_text()

# README's three changes, made after startproject's own lines whatever their quoting.
AS_README_SAYS = """
# lockwatch, as its README says
INSTALLED_APPS = [*INSTALLED_APPS, "lockwatch"]
DATABASES["default"]["ENGINE"] = "lockwatch.db.backends.sqlite3"
MIDDLEWARE = ["lockwatch.middleware.LockwatchMiddleware", *MIDDLEWARE]
"""


def _env() -> dict[str, str]:
    # The child imports the lockwatch under test (ROOT), not the test project's settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKWATCH", "DJANGO"))}
    return {**env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def startproject(where: Path, lockwatch: str | None = None) -> Path:
    where.mkdir()
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite", str(where)],
        env=_env(), check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    settings = where / "mysite" / "settings.py"
    extra = AS_README_SAYS + (f"LOCKWATCH = {lockwatch}\n" if lockwatch else "")
    settings.write_text(settings.read_text() + extra)
    return where


def manage(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=site, env=_env(), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


def test_the_project_is_set_up_as_readme_says():
    snippet = README.split("## Install into your project", 1)[1].split("```python", 1)[1]
    snippet = snippet.split("```", 1)[0]
    assert 'INSTALLED_APPS = [..., "lockwatch"]' in snippet
    assert '"ENGINE": "lockwatch.db.backends.sqlite3",' in snippet
    assert 'MIDDLEWARE = ["lockwatch.middleware.LockwatchMiddleware", ...]' in snippet


def test_a_fresh_project_prints_no_advice_until_check_deploy(tmp_path):
    site = startproject(tmp_path / "site")
    for args in (["migrate"], ["migrate"], ["showmigrations"], ["check"]):
        # The second migrate finds db.sqlite3 in the rollback journal: still no advice.
        done = manage(site, *args)
        assert done.returncode == 0, done.stderr
        assert "lockwatch" not in done.stdout + done.stderr, args
    assert (site / "lockwatch.sqlite3").exists()  # capture ran all along

    # Django 6's own deploy checks fail a fresh project (mail.E001), so not the exit status.
    deploy = manage(site, "check", "--deploy")
    for check_id in ("lockwatch.W010", "lockwatch.W013"):
        assert check_id in deploy.stderr
    assert "(lockwatch.E" not in deploy.stderr
    assert "lockwatch.W012" not in deploy.stderr  # Django's 5 s timeout is fine

    doctor = subprocess.run(
        [sys.executable, "-m", "lockwatch", "doctor", "--settings", "mysite.settings"],
        cwd=site, env=_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert doctor.returncode == 0, doctor.stderr
    assert "Configuration (mysite.settings):" in doctor.stdout
    assert "- lockwatch.W010: DATABASES['default'] uses journal_mode=DELETE" in doctor.stdout
    assert "- lockwatch.W013: DATABASES['default'] starts transactions as DEFERRED" in doctor.stdout


# The process's own counters, read after a migrate run by the project's own manage.py code.
MIGRATE_AND_COUNT = """
import json, os
os.environ["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
from django.core.management import execute_from_command_line
execute_from_command_line(["manage.py", "migrate", "-v", "0"])
from lockwatch import pipeline
pipeline.flush()
c = pipeline.counters
print(json.dumps({"store_errors": c.store_errors, "lost": c.lost}))
"""


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def test_an_unwritable_store_stops_nothing_and_counts_what_it_loses(tmp_path):
    # /proc takes no new files, not even root's: the read-only container filesystem's case.
    site = startproject(tmp_path / "site", '{"STORE": "/proc/x/events.sqlite3"}')

    counted = subprocess.run(
        [sys.executable, "-c", MIGRATE_AND_COUNT], cwd=site, env=_env(), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert counted.returncode == 0, counted.stderr
    assert (site / "db.sqlite3").exists()
    figures = json.loads(counted.stdout.strip().splitlines()[-1])
    assert figures["store_errors"] >= 1 and figures["lost"] >= 1, figures
    assert "lockwatch.W005" in counted.stderr
    # Each logged store failure names the file it could not make (was FileNotFoundError(2, ...)).
    failures = [line for line in counted.stderr.splitlines() if "failed:" in line]
    assert failures and all("/proc/x" in line for line in failures), failures

    for args in (["migrate"], ["check"]):
        done = manage(site, *args)
        assert done.returncode == 0, done.stderr
        assert "lockwatch.W005" in done.stderr and "/proc/x/events.sqlite3" in done.stderr

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=site, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        status = None
        deadline = time.monotonic() + 60
        while status is None and server.poll() is None and time.monotonic() < deadline:
            status = _get(f"http://127.0.0.1:{port}/admin/login/")
            time.sleep(0.2)
        assert status == 200, f"runserver did not serve (exit {server.poll()})"
    finally:
        server.send_signal(signal.SIGINT)
        try:
            output, _ = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            output, _ = server.communicate()
    assert "lockwatch.W005" in output
    assert "SystemCheckError" not in output
