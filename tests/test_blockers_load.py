"""gunicorn -w 6 under a mixed load: every wait and busy error names what held the lock.

Autocommit creates, read transactions, read-then-write transactions (they fail with
`upgrade`), a long holder, and a `@transaction.atomic` view, under the rollback
journal and under WAL. A named blocker is checked against the holder's own record:
its transaction or autocommit write held the lock during the wait.
"""

from __future__ import annotations

import http.client
import json
import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lockwatch import holders
from tests.conftest import ROOT, free_port
from tests.support.lockowners import LockOwners
from tests.support.servers import project_env

MANAGE = ROOT / "tests" / "project" / "manage.py"
VIEWS = "tests/project/shop/views.py"
PATHS = ["/write/"] * 4 + ["/read-txn/"] * 2 + ["/upgrade/", "/decorated/", "/decorated/"]


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def _holds(rows: list[dict]) -> dict[tuple[int, str], list[tuple[float, float]]]:
    """Each (pid, thread)'s lock holds, as the holders recorded them."""
    out: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for r in rows:
        if r["kind"] == "transaction" and r["lock_ts"] is not None:
            start, ms = r["lock_ts"], r["hold_ms"] or 0.0
        elif r["kind"] == "query" and r["hold_ms"] is not None:
            start, ms = r["ts"] + (r["wait_ms"] or 0.0) / 1000.0, r["hold_ms"]
        else:
            continue
        out.setdefault((r["pid"], r["thread"]), []).append((start, start + ms / 1000.0))
    return out


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_gunicorn_mixed_load_names_every_blocker(lw, tmp_path: Path, journal: str):
    db = tmp_path / "app.sqlite3"
    env = project_env(db, lw.store, LOCKWATCH_TEST_TIMEOUT="0.25")
    raw = sqlite3.connect(db)
    raw.execute(f"PRAGMA journal_mode={journal}")
    raw.close()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "6", "-b", f"127.0.0.1:{port}",
         "--graceful-timeout", "5", "tests.project.wsgi:application"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    statuses: list[int] = []
    owners = LockOwners(db)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(port, "/read-txn/")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)

        def client(seed: int) -> None:
            rng = random.Random(seed)
            stop = time.monotonic() + 5.0
            while time.monotonic() < stop:
                statuses.append(_get(port, rng.choice(PATHS)))

        def holder() -> None:
            stop = time.monotonic() + 5.0
            while time.monotonic() < stop:
                statuses.append(_get(port, "/hold/?s=0.3"))
                time.sleep(0.3)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(10)]
        threads.append(threading.Thread(target=holder))
        owners.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        owners.done.set()
        server.terminate()
        server.wait(30)

    assert 200 in statuses and 500 in statuses, "the load contended"
    lw.settle()
    rows = lw.rows()
    holds = _holds(rows)
    waits = [r for r in rows if r["kind"] in ("wait", "busy")]
    assert len(waits) >= 20
    wrong = []
    for w in waits:
        end = w["ts"] + (w["duration_ms"] or 0.0) / 1000.0
        if w["blocker_context"] == holders.READERS:
            # Only a writer holding the lock can wait for readers (rollback journal).
            ok = journal == "delete" and w["stmt_class"] in ("write", "commit", "ddl")
        elif w["blocker_pid"] is None:
            ok = False  # no other program touches this file: outside is wrong
        else:
            spans = holds.get((w["blocker_pid"], w["blocker_thread"]), [])
            # The named holder held the lock at some time during the wait (or, for an
            # upgrade error, at the moment it was raised).
            ok = any(s <= end + 0.05 and e >= w["ts"] - 0.05 for s, e in spans)
            if not ok and w["blocker_context"] != holders.OUTSIDE:
                # A connection closing the file (the last one checkpoints it), or a
                # WAL reader's instant: no hold in its records, but the kernel saw
                # its process hold the lock.
                brief = w["blocker_context"] != holders.WAL_READ or journal == "wal"
                ok = brief and owners.held(w["blocker_pid"], w["ts"] - 0.05, end + 0.05)
        if not ok:
            wrong.append(w)
    detail = [
        {k: w[k] for k in ("kind", "classification", "stmt_class", "wait_ms", "pid",
                           "blocker_pid", "blocker_context", "blocker_call_site",
                           "blocker_split")}
        for w in wrong[:5]
    ]  # fmt: skip
    # The detail as text: pytest would cut a tuple's repr short, blockers and all.
    assert len(wrong) <= 0.01 * len(waits), (
        f"{len(wrong)} of {len(waits)} waits name a wrong blocker: {json.dumps(detail)}"
    )

    # Every transaction of the decorated view has a call site in the view's file.
    decorated = [
        r for r in rows if r["kind"] == "transaction" and r["context"] == "request:GET /decorated/"
    ]  # fmt: skip
    assert decorated
    assert all((r["call_site"] or "").startswith(VIEWS) for r in decorated), {
        r["call_site"] for r in decorated
    }
