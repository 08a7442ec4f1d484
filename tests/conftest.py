from __future__ import annotations

import itertools
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

# Hypothesis's default 200 ms deadline per example is a two-sided timing check in
# effect: on a loaded machine an example can take longer, and one did.
hypothesis_settings.register_profile("lockwatch", deadline=None)
hypothesis_settings.load_profile("lockwatch")

ROOT = Path(__file__).resolve().parents[1]
_session_dir = Path(tempfile.mkdtemp(prefix="lockwatch-tests-"))
os.environ.setdefault("LOCKWATCH_TEST_DB", str(_session_dir / "project.sqlite3"))
os.environ.setdefault("LOCKWATCH_STORE", str(_session_dir / "store.sqlite3"))
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.project.settings"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import django  # noqa: E402

django.setup()

from django.db import connections  # noqa: E402
from django.test import override_settings  # noqa: E402

from lockwatch import conf, pipeline  # noqa: E402
from tests.project.shop.models import Item  # noqa: E402
from tests.support.net import free_port  # noqa: E402

# Fixtures that several modules use: servers, a browser, the dashboard's story store.
pytest_plugins = ["tests.support.fixtures"]

_aliases = itertools.count(1)


class Lockwatch:
    """A fresh store and pipeline for one test, and a way to read it back."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.cleanups: list = []

    def flush(self) -> None:
        pipeline.flush()

    def rows(self, sql: str = "SELECT * FROM events ORDER BY id", args: tuple = ()) -> list[dict]:
        self.flush()
        if not self.store.exists():
            return []
        conn = sqlite3.connect(self.store)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql, args)]
        finally:
            conn.close()

    def events(self, **match) -> list[dict]:
        return [r for r in self.rows() if all(r.get(k) == v for k, v in match.items())]

    def settle(self) -> None:
        """Flush, and check every wait and busy event already names its blocker.

        Capture names it at the moment of waiting: nothing is attributed later.
        """
        blank = self.rows(
            "SELECT count(*) AS n FROM events WHERE kind IN ('wait','busy')"
            " AND blocker_context IS NULL"
        )[0]["n"]
        assert not blank, f"{blank} waits or busy errors without a blocker"


@pytest.fixture
def lw(tmp_path: Path):
    store = tmp_path / "lockwatch.sqlite3"
    pipeline.shutdown()
    pipeline.reset()
    with override_settings(LOCKWATCH=_lw_settings(store)):
        conf.reset()
        lw = Lockwatch(store)
        yield lw
        pipeline.shutdown()
        pipeline.reset()
        for cleanup in reversed(lw.cleanups):
            cleanup()
    conf.reset()


def _lw_settings(store: Path, **extra) -> dict:
    # Every write stored as an event (HOLD_RECORD_MS 0): these tests check what capture
    # saw of each statement. tests/test_quiet_writes.py checks the default's folding.
    return {
        "STORE": str(store), "FLUSH_INTERVAL": 0.02, "ATTRIBUTION_GRACE": 1.0,
        "HOLD_RECORD_MS": 0, **extra,
    }  # fmt: skip


def lw_settings(lw: Lockwatch, **extra) -> None:
    """The ``lw`` fixture's LOCKWATCH with ``extra`` keys changed, for the rest of this
    test (a new pipeline reads them)."""
    pipeline.shutdown()
    pipeline.reset()
    settings_override = override_settings(LOCKWATCH=_lw_settings(lw.store, **extra))
    settings_override.enable()
    conf.reset()
    lw.cleanups.append(settings_override.disable)


def every_statement(lw: Lockwatch) -> None:
    """Record every statement as a query event (CAPTURE_QUERIES="all") for this test."""
    lw_settings(lw, CAPTURE_QUERIES="all")


@pytest.fixture
def watched(tmp_path: Path):
    """make(**options) -> a new alias on a fresh SQLite file with the Item table."""
    made: list[str] = []

    def make(
        engine: str = "lockwatch.db.backends.sqlite3",
        journal: str = "delete",
        name: str | None = None,
        **options,
    ) -> str:
        alias = f"w{next(_aliases)}"
        path = tmp_path / (name or f"{alias}.sqlite3")
        cfg = connections.configure_settings(
            {
                "default": connections.settings["default"],
                alias: {"ENGINE": engine, "NAME": str(path), "OPTIONS": options},
            }
        )
        connections.settings[alias] = cfg[alias]
        made.append(alias)
        raw = sqlite3.connect(path)
        raw.execute(f"PRAGMA journal_mode={journal}")
        raw.close()
        with connections[alias].schema_editor() as editor:
            editor.create_model(Item)
        return alias

    yield make
    for alias in made:
        connections[alias].close()
        del connections.settings[alias]


def run_threads(*targets) -> list[BaseException | None]:
    """Run callables in threads that close their own connections; return their errors."""
    errors: list[BaseException | None] = [None] * len(targets)

    def wrap(i, fn):
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001
            errors[i] = exc
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=wrap, args=(i, t), name=f"t{i}") for i, t in enumerate(targets)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return errors


def line_of(path: Path, marker: str) -> int:
    for n, text in enumerate(path.read_text().splitlines(), 1):
        if marker in text:
            return n
    raise LookupError(marker)


class Redis:
    """A real redis-server on a free port, for the live-path tests."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def redis() -> Iterator[Redis]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing: apt-get install redis-server")
        pytest.skip("redis-server is not installed")
    server = Redis(free_port())
    server.start()
    yield server
    server.kill()


@pytest.fixture(autouse=True)
def _fresh_throttle():
    """Wrong tokens counted by one test never throttle the next (the counter is global)."""
    from lockwatch.dashboard import auth

    auth.THROTTLE.clear()
    yield
