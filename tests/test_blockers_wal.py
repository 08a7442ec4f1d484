"""WAL mode with short-lived connections: closing the file takes the lock.

The last connection to close a WAL database checkpoints it holding an EXCLUSIVE
lock, with no write of its own in progress. A read that waits behind it names
it, checked against the kernel's lock owner sampled by the test.

(A new connection's first read rebuilds the WAL index holding the WAL write
lock too, but readers behind it retry inside SQLite, never through the busy
handler: there is no wait to name.)
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lockwatch
from lockwatch import holders
from tests.conftest import ROOT
from tests.support.lockowners import LockOwners
from tests.support.servers import project_env

MANAGE = ROOT / "tests" / "project" / "manage.py"


@pytest.fixture
def instrumented():
    lockwatch.instrument_sqlite3()
    yield
    lockwatch.uninstrument_sqlite3()


def _env(lw, db: Path) -> dict[str, str]:
    return project_env(db, lw.store, migrate=False)


def _wal_db(lw, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    db = tmp_path / "app.sqlite3"
    env = _env(lw, db)
    subprocess.run([sys.executable, str(MANAGE), "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    raw = sqlite3.connect(db)
    raw.execute("PRAGMA journal_mode=wal")
    raw.close()
    return db, env


def _read_when_ready(db: Path, ready: Path, proc: subprocess.Popen) -> None:
    """As soon as ``proc`` says it is about to close: read, in a new connection."""
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.0005)
    conn = sqlite3.connect(db, timeout=10)
    try:
        conn.execute("SELECT count(*) FROM shop_item").fetchone()
    finally:
        conn.close()


def _check(lw, owners: LockOwners, pid: int) -> list[dict]:
    waits = [w for w in lw.events(kind="wait") if w["pid"] == os.getpid()]
    for w in waits:
        # The kernel saw the named process hold the lock while this read waited.
        assert owners.held(w["blocker_pid"], w["ts"] - 0.01, w["ts"] + w["wait_ms"] / 1000 + 0.01)
        assert w["blocker_context"] == "command:wal_file", w
        assert w["blocker_pid"] == pid
        assert w["blocker_split"] and holders.OUTSIDE not in w["blocker_split"]
    return waits


def test_the_last_connection_closing_is_named(lw, tmp_path, instrumented):
    db, env = _wal_db(lw, tmp_path)
    for attempt in range(5):
        ready = tmp_path / f"ready{attempt}"
        closer = subprocess.Popen(
            [sys.executable, str(MANAGE), "wal_file", "--ready-file", str(ready)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        with LockOwners(db) as owners:
            _read_when_ready(db, ready, closer)
            closer.communicate(timeout=60)
        assert closer.returncode == 0
        lw.settle()
        waits = _check(lw, owners, closer.pid)
        if waits:
            break  # else the read came before the close took the lock: again
    else:
        pytest.fail("the read never waited behind the closing connection")
    for w in waits:
        assert w["stmt_class"] == "read"
        assert w["blocker_call_site"] == "closing the connection (WAL checkpoint)"
