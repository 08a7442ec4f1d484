"""Capture never changes the app: interrupts, every busy_timeout spelling, forked workers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connections

from tests.conftest import ROOT
from tests.support.servers import project_env

SCRIPT = """
import os, signal, sqlite3, sys, threading, time
sys.path.insert(0, os.environ["LW_ROOT"])
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.project.settings"
import django
django.setup()
from django.db import connection
from tests.project.shop.models import Item

Item.objects.count()
holder = sqlite3.connect(os.environ["LOCKWATCH_TEST_DB"], isolation_level=None)
holder.execute("BEGIN IMMEDIATE")
if sys.argv[1] == "exit":
    signal.signal(signal.SIGUSR1, lambda *a: sys.exit(3))
    sig = signal.SIGUSR1
else:
    # Ctrl-C's handler, as in a terminal: a shell's background job (CI, scripts/burn.sh)
    # starts with SIGINT ignored, and Python then installs none.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sig = signal.SIGINT
threading.Timer(0.5, os.kill, (os.getpid(), sig)).start()
t0 = time.monotonic()
try:
    Item.objects.create(name="x")
except BaseException as exc:
    print(type(exc).__name__, repr(getattr(exc, "code", None)), round(time.monotonic() - t0, 1))
"""


def _env(tmp_path: Path, engine: str) -> dict[str, str]:
    return project_env(
        tmp_path / "app.sqlite3", tmp_path / "store.sqlite3", LW_ROOT=str(ROOT),
        LOCKWATCH_TEST_TIMEOUT="4",
    )  # fmt: skip


@pytest.mark.parametrize(("how", "expected"), [("int", "KeyboardInterrupt None"),
                                               ("exit", "SystemExit 3")])  # fmt: skip
def test_an_interrupt_during_a_lock_wait_is_raised_as_itself(tmp_path: Path, how, expected):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, how], env=_env(tmp_path, "lockwatch"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    kind, code, seconds = out.stdout.split()
    assert f"{kind} {code}" == expected, (out.stdout, out.stderr)
    # Given up at the interrupt, not after the 4 s timeout.
    assert float(seconds) < 3.5


@pytest.mark.parametrize(
    "pragma",
    ["PRAGMA busy_timeout(300)", "pragma main.busy_timeout = 300", "PRAGMA busy_timeout=300"],
)
def test_every_busy_timeout_spelling_keeps_the_exact_handler(lw, watched, pragma):
    from django.db import OperationalError

    db = watched(timeout=5)
    conn = connections[db]
    with conn.cursor() as cur:
        cur.execute(pragma)
    holder = sqlite3.connect(conn.settings_dict["NAME"], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OperationalError), conn.cursor() as cur:
            cur.execute("INSERT INTO shop_item (name, qty) VALUES ('x', 0)")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    (busy,) = lw.events(kind="busy")
    assert busy["classification"] == "timeout"
    assert busy["wait_ms"] >= 300 * 0.95
    assert busy["blocker_context"] == "outside"


FORK = """
import os, sys
sys.path.insert(0, os.environ["LW_ROOT"])
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.project.settings"
import django
django.setup()
from django.db import transaction
from lockwatch import pipeline
from tests.project.shop.models import Item

def batch(n):
    for _ in range(n):
        with transaction.atomic():
            Item.objects.create(name="t")

batch(1)
pid = os.fork()
if pid == 0:  # the child keeps the parent's connection, as Django's parallel runner does
    batch(3)
    pipeline.shutdown()
    os._exit(0)
os.waitpid(pid, 0)
batch(3)
pipeline.shutdown()
print(os.getpid(), pid)
"""


def test_a_forked_child_gives_an_inherited_connection_a_new_identity(tmp_path: Path):
    env = _env(tmp_path, "lockwatch")
    out = subprocess.run(
        [sys.executable, "-c", FORK], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    parent, child = map(int, out.stdout.split())
    store = sqlite3.connect(env["LOCKWATCH_STORE"])
    txns = store.execute(
        "SELECT pid, count(*) FROM events WHERE kind = 'transaction' AND lock_ts IS NOT NULL"
        " GROUP BY pid"
    ).fetchall()
    holds = store.execute("SELECT pid, count(*) FROM holds GROUP BY pid").fetchall()
    keys = store.execute("SELECT count(DISTINCT key), count(*) FROM holds").fetchone()
    store.close()
    mine = (parent, child)
    by_pid = {p: n for p, n in txns if p in mine}
    assert by_pid == {parent: 4, child: 3}
    # Every transaction that took the lock has its hold row: none collided.
    assert {p: n for p, n in holds if p in mine} == by_pid
    assert keys[0] == keys[1]


def test_waits_are_measured_late_never_early(lw, watched):
    """A one-sided bound on a measured wait: it cannot be shorter than the hold it sat behind."""
    db = watched(timeout=5)
    path = connections.settings[db]["NAME"]
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    import threading

    from tests.project.shop.models import Item

    released = {}

    def release():
        time.sleep(0.3)
        released["t"] = time.time()
        holder.execute("COMMIT")

    t = threading.Thread(target=release)
    start = time.time()
    t.start()
    Item.objects.using(db).create(name="w")
    t.join()
    holder.close()
    (wait,) = lw.events(kind="wait")
    assert wait["wait_ms"] >= (released["t"] - start) * 1000.0 - 5
    assert wait["blocker_context"] == "outside"
