"""``lockwatch run -- COMMAND`` on a fresh ``django-admin startproject`` whose files never
mention lockwatch: gunicorn's workers, management commands and runserver's reloaded child
are all captured, and the project's files are left as they were.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lockwatch import autorun
from tests.conftest import ROOT
from tests.support.net import free_port

SHOP_MODELS = """from django.db import models


class Hit(models.Model):
    n = models.IntegerField()
"""

SHOP_VIEWS = """import os
import time

from django.db import transaction
from django.http import HttpResponse

from .models import Hit


def hold(request):
    with transaction.atomic():
        Hit.objects.create(n=1)  # takes the write lock
        time.sleep(float(request.GET.get("s", "1")))
    return HttpResponse("held")


def write(request):
    with transaction.atomic():
        Hit.objects.count()
        Hit.objects.create(n=2)  # fails at once while /hold/ holds the lock
    return HttpResponse("wrote")


def pid(request):
    time.sleep(float(request.GET.get("s", "0")))
    return HttpResponse(str(os.getpid()))
"""

SHOP_URLS = """
from shop import views as shop_views  # noqa: E402

urlpatterns += [
    path("hold/", shop_views.hold),
    path("write/", shop_views.write),
    path("pid/", shop_views.pid),
]
"""

# A backend of the project's own, over Django's: lockwatch run cannot swap it.
OWN_BACKEND = """from django.db.backends.sqlite3 import base


class DatabaseWrapper(base.DatabaseWrapper):
    pass
"""


def _env(**extra: str) -> dict[str, str]:
    # The project's processes import the lockwatch under test (ROOT) and know nothing of
    # the test suite's settings or store.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LOCKWATCH", "DJANGO", "PYTEST", "PYTHONPATH"))
    }
    return {**env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **extra}


def _project(where: Path, engine: str | None = None) -> Path:
    """startproject, plus a small app with a view that holds the write lock and one that
    writes. No line mentions lockwatch."""
    where.mkdir()
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite", str(where)],
        env=_env(), check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (where / "shop").mkdir()
    (where / "shop" / "__init__.py").write_text("")
    (where / "shop" / "models.py").write_text(SHOP_MODELS)
    (where / "shop" / "views.py").write_text(SHOP_VIEWS)
    settings = where / "mysite" / "settings.py"
    extra = '\nINSTALLED_APPS = [*INSTALLED_APPS, "shop"]\n'
    if engine:
        (where / "shop" / "backend").mkdir()
        (where / "shop" / "backend" / "__init__.py").write_text("")
        (where / "shop" / "backend" / "base.py").write_text(OWN_BACKEND)
        extra += f'DATABASES["default"]["ENGINE"] = "{engine}"\n'
    settings.write_text(settings.read_text() + extra)
    urls = where / "mysite" / "urls.py"
    urls.write_text(urls.read_text() + SHOP_URLS)
    return where


def _fingerprint(site: Path) -> dict[str, str]:
    """Every file's hash, but the database the app writes and Python's bytecode cache."""
    return {
        str(p.relative_to(site)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(site.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith("db.sqlite3")
    }


def _lockwatch_run(*args: str) -> list[str]:
    return [sys.executable, "-m", "lockwatch", "run", *args]


def _run(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _lockwatch_run(*args), cwd=site, env=_env(**env), capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip


def _rows(store: Path, sql: str, args: tuple = ()) -> list[dict]:
    if not store.exists():
        return []
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def _fetch(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _get(port: int, path: str) -> int:
    return _fetch(port, path)[0]


def _workers(port: int, n: int) -> set[int]:
    """The pids of N sync workers, each made to serve a request (so each has loaded the
    settings): N slow requests at once, until N pids answered."""
    seen: set[int] = set()
    deadline = time.monotonic() + 120
    while len(seen) < n and time.monotonic() < deadline:
        answers: list[bytes] = []

        def ask(into: list[bytes] = answers) -> None:
            into.append(_fetch(port, "/pid/?s=1")[1])

        threads = [threading.Thread(target=ask) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        seen |= {int(a) for a in answers}
    assert len(seen) >= n, seen
    return seen


def _wait_until_serving(port: int, server: subprocess.Popen, path: str = "/admin/login/") -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            _get(port, path)
            return
        except OSError:
            assert server.poll() is None, f"the server exited ({server.returncode})"
            assert time.monotonic() < deadline, "the server did not answer within 90 s"
            time.sleep(0.2)


def _serve(site: Path, log: Path, *args: str) -> subprocess.Popen:
    """`lockwatch run ARGS` in its own session, stderr to LOG: a pipe nobody reads while
    the test runs would fill with the 500s' tracebacks and block the workers."""
    with open(log, "w") as stderr:
        return subprocess.Popen(
            _lockwatch_run(*args), cwd=site, env=_env(), stdout=subprocess.DEVNULL,
            stderr=stderr, start_new_session=True,
        )  # fmt: skip


def _stop(server: subprocess.Popen, log: Path, sig: int = signal.SIGTERM) -> str:
    """Stop the server (its whole session: runserver's reloader has a child) and return
    its stderr."""
    try:
        os.killpg(server.pid, sig)
    except ProcessLookupError:
        pass
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    return log.read_text()


def _busy(store: Path) -> list[dict]:
    return _rows(store, "SELECT * FROM events WHERE kind = 'busy' ORDER BY id")


def test_gunicorn_workers_are_captured_and_the_project_is_untouched(tmp_path: Path):
    site = _project(tmp_path / "site")
    store = tmp_path / "store" / "lockwatch.sqlite3"
    store.parent.mkdir()
    before = _fingerprint(site)

    migrate = _run(site, "--store", str(store), "--", sys.executable, "manage.py", "migrate",
                   "--run-syncdb", "-v0")  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr
    assert "lockwatch" not in migrate.stderr

    port = free_port()
    log = tmp_path / "gunicorn.log"
    server = _serve(site, log, "--store", str(store), "--", sys.executable, "-m", "gunicorn",
                    "mysite.wsgi", "-w", "3", "-b", f"127.0.0.1:{port}",
                    "--graceful-timeout", "10")  # fmt: skip
    statuses: list[int] = []
    errors: list[OSError] = []
    stop = threading.Event()
    try:
        _wait_until_serving(port, server)
        workers = _workers(port, 3)

        def client(path: str, pause: float) -> None:
            while not stop.is_set():
                try:
                    statuses.append(_get(port, path))
                except OSError as exc:  # kept for the report, not raised in a thread
                    statuses.append(-1)
                    errors.append(exc)
                time.sleep(pause)

        threads = [threading.Thread(target=client, args=("/hold/?s=0.8", 0))]
        threads += [threading.Thread(target=client, args=("/write/", 0.02)) for _ in range(5)]
        for t in threads:
            t.start()
        # Until busy errors from two workers name the holder (one-sided: no upper bound
        # on how fast a loaded machine gets there, only on how long we wait).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            named = {r["pid"] for r in _busy(store) if r["blocker_context"] == "request:GET /hold/"}
            if len(named) >= 2:
                break
            time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(90)
    finally:
        stop.set()
        err = _stop(server, log)
    # exec: the process lockwatch run started is gunicorn's master, which SIGTERM stops.
    assert server.returncode == 0, err[-3000:]
    assert 500 in statuses and 200 in statuses, sorted(set(statuses))
    assert not errors, (errors[:3], err[-4000:])

    busy = _busy(store)
    views = "shop/views.py:"
    from_hold = [r for r in busy if r["blocker_context"] == "request:GET /hold/"]
    assert len({r["pid"] for r in from_hold}) >= 2, [(r["pid"], r["blocker_context"]) for r in busy]
    assert all((r["blocker_call_site"] or "").startswith(views) for r in from_hold), {
        r["blocker_call_site"] for r in from_hold
    }
    assert {r["context"] for r in from_hold} == {"request:GET /write/"}
    assert all(r["call_site"].startswith(views) for r in from_hold)
    assert all(r["blocker_pid"] not in (None, r["pid"]) for r in from_hold)
    # Every process that captured a request is one of gunicorn's workers, not the master.
    requests = _rows(store, "SELECT DISTINCT pid FROM events WHERE context LIKE 'request:%'")
    assert {r["pid"] for r in requests} <= workers and server.pid not in workers
    assert "lockwatch run: warning" not in err

    assert _fingerprint(site) == before
    assert not (site / "lockwatch.sqlite3").exists()  # the store went where --store said


def test_management_commands_are_tagged(tmp_path: Path):
    site = _project(tmp_path / "site")
    store = tmp_path / "events.sqlite3"
    before = _fingerprint(site)
    for command in (
        ["manage.py", "migrate", "--run-syncdb", "-v0"],
        ["-m", "django", "createsuperuser", "--noinput", "--username", "ada",
         "--email", "ada@example.com", "--settings", "mysite.settings"],
    ):  # fmt: skip
        done = _run(site, "--store", str(store), "--", sys.executable, *command,
                    DJANGO_SUPERUSER_PASSWORD="not-a-secret-0")  # fmt: skip
        assert done.returncode == 0, done.stderr
    # Their writes are quick (quiet writes: counted, not events); each process is named.
    programs = {r["program"] for r in _rows(store, "SELECT DISTINCT program FROM processes")}
    assert programs == {"command:migrate", "command:createsuperuser"}, programs
    (quiet,) = _rows(store, "SELECT count(DISTINCT pid) AS n, sum(n) AS writes FROM quiet")
    assert quiet["n"] == 2 and quiet["writes"] > 0
    assert _fingerprint(site) == before


def test_without_store_the_project_default_is_used(tmp_path: Path):
    site = _project(tmp_path / "site")
    done = _run(site, "--", sys.executable, "manage.py", "migrate", "--run-syncdb", "-v0")
    assert done.returncode == 0, done.stderr
    # README's default: lockwatch.sqlite3 in BASE_DIR, as with the settings changed by hand.
    programs = _rows(site / "lockwatch.sqlite3", "SELECT DISTINCT program FROM processes")
    assert {"program": "command:migrate"} in programs


def test_runserver_reloaded_child_is_captured(tmp_path: Path):
    site = _project(tmp_path / "site")
    store = tmp_path / "events.sqlite3"
    assert _run(site, "--store", str(store), "--", sys.executable, "manage.py", "migrate",
                "--run-syncdb", "-v0").returncode == 0  # fmt: skip
    port = free_port()
    log = tmp_path / "runserver.log"
    server = _serve(site, log, "--store", str(store), "--", sys.executable, "manage.py",
                    "runserver", f"127.0.0.1:{port}")  # fmt: skip
    try:
        _wait_until_serving(port, server)
        assert _get(port, "/write/") == 200
        deadline = time.monotonic() + 60
        rows: list[dict] = []
        while not rows and time.monotonic() < deadline:
            time.sleep(0.2)
            rows = _rows(store, "SELECT pid FROM events WHERE context = 'request:GET /write/'")
    finally:
        err = _stop(server, log, signal.SIGINT)
    # The autoreloader serves from a child process it starts: that child is captured.
    assert rows and all(r["pid"] != server.pid for r in rows), err[-3000:]


def test_a_subclassed_sqlite_backend_is_left_alone_with_one_warning(tmp_path: Path):
    site = _project(tmp_path / "site", engine="shop.backend")
    store = tmp_path / "events.sqlite3"
    port = free_port()
    log = tmp_path / "gunicorn.log"
    server = _serve(site, log, "--store", str(store), "--", sys.executable, "-m", "gunicorn",
                    "mysite.wsgi", "-w", "3", "-b", f"127.0.0.1:{port}")  # fmt: skip
    try:
        _wait_until_serving(port, server)
        _workers(port, 3)  # each has loaded the settings
    finally:
        err = _stop(server, log)
    warnings = [line for line in err.splitlines() if line.startswith("lockwatch run:")]
    assert len(warnings) == 1, err[-3000:]
    assert "shop.backend" in warnings[0] and "cannot swap" in warnings[0]
    assert not _rows(store, "SELECT id FROM events")


def test_a_user_sitecustomize_still_runs(tmp_path: Path):
    own = tmp_path / "own"
    own.mkdir()
    (own / "sitecustomize.py").write_text("import os\nos.environ['USER_SITECUSTOMIZE'] = 'ran'\n")
    code = (
        "import os, sys, django.conf; print(os.environ.get('USER_SITECUSTOMIZE'),"
        " sys.modules['sitecustomize'].__file__,"
        " getattr(django.conf.LazySettings, '_lockwatch_autorun', False))"
    )
    done = subprocess.run(
        _lockwatch_run("--", sys.executable, "-c", code), cwd=tmp_path,
        env=_env(PYTHONPATH=f"{own}{os.pathsep}{ROOT}"), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ran", str(own / "sitecustomize.py"), "True"]


def test_a_broken_lockwatch_never_stops_the_command(tmp_path: Path):
    """lockwatch fails in the child (here, a broken copy shadows it): the command runs,
    uninstrumented, after one warning line."""
    site = _project(tmp_path / "site")
    broken = tmp_path / "broken" / "lockwatch"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('broken on purpose')\n")
    code = (
        f"import sys; sys.path.insert(0, {str(broken.parent)!r});"
        " from django.core.management import execute_from_command_line;"
        " execute_from_command_line(['manage.py', 'migrate', '--run-syncdb', '-v0']);"
        " from django.conf import settings; print(settings.DATABASES['default']['ENGINE'])"
    )
    store = tmp_path / "events.sqlite3"
    done = _run(site, "--store", str(store), "--", sys.executable, "-c", code,
                DJANGO_SETTINGS_MODULE="mysite.settings")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "django.db.backends.sqlite3"
    warnings = [line for line in done.stderr.splitlines() if "lockwatch" in line]
    assert len(warnings) == 1 and "broken on purpose" in warnings[0], done.stderr
    assert "runs without it" in warnings[0]
    assert (site / "db.sqlite3").exists() and not store.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no command to run"),
        (["--"], "no command to run"),
        (["--store", "{tmp}/s.sqlite3"], "no command to run"),
        (["--store", "{tmp}/missing/s.sqlite3", "--", "touch", "ran"], "does not exist"),
        (["--store", "{tmp}", "--", "touch", "ran"], "is a folder"),
        (["--store", "{tmp}/text.txt", "--", "touch", "ran"], "is not a SQLite file"),
        (["--bogus", "--", "touch", "ran"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_exit_2_and_run_nothing(tmp_path: Path, args: list[str], message: str):
    (tmp_path / "text.txt").write_text("not a store")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    done = subprocess.run(
        _lockwatch_run(*argv), cwd=tmp_path, env=_env(), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "ran").exists()


def test_a_missing_command_is_127(tmp_path: Path):
    done = subprocess.run(
        _lockwatch_run("--", "no-such-command-here"), cwd=tmp_path, env=_env(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 127
    assert done.stderr.strip() == "lockwatch run: error: command not found: no-such-command-here"


def test_settings_configure_in_code_is_instrumented(tmp_path: Path):
    code = (
        "from django.conf import settings;"
        " settings.configure(DATABASES={'default': {'ENGINE': 'django.db.backends.sqlite3',"
        " 'NAME': 'x.sqlite3'}}, INSTALLED_APPS=[]);"
        " print(settings.DATABASES['default']['ENGINE'], settings.INSTALLED_APPS,"
        " settings.MIDDLEWARE, settings.LOCKWATCH['STORE'])"
    )
    store = tmp_path / "s.sqlite3"
    done = subprocess.run(
        _lockwatch_run("--store", str(store), "--", sys.executable, "-c", code), cwd=tmp_path,
        env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        autorun.ENGINE, "['lockwatch']", f"['{autorun.MIDDLEWARE}']", str(store)
    ]  # fmt: skip
