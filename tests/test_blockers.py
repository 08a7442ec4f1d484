"""Exact blockers: each wait and busy error names what really held the lock.

Every scenario forces a real shape on a real SQLite file, and the truth is
established independently of lockwatch: a raw, uninstrumented connection
probes whether the write lock is held, and holders report their own times.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.db import OperationalError, connections, transaction

from lockwatch import holders
from lockwatch.capture.rawsqlite import original_connect
from tests.conftest import line_of, run_threads
from tests.project.shop.models import Item
from tests.support.servers import project_env

HERE = Path(__file__)


def site(marker: str, function: str) -> str:
    return f"tests/{HERE.name}:{line_of(HERE, marker)} in {function}"


def path_of(alias: str) -> str:
    return str(connections.settings[alias]["NAME"])


def lock_is_held(path: str) -> bool:
    """Ground truth: can a raw connection take the write lock right now?"""
    conn = original_connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return True
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
    return False


def split_of(row: dict) -> list[dict]:
    return json.loads(row["blocker_split"]) if row["blocker_split"] else []


def test_insert_returning_holds_the_lock_through_its_commit_wait_for_readers(lw, watched):
    """Rollback journal: create() = INSERT ... RETURNING; its COMMIT (inside the fetch)
    waits for a reader while it holds the lock. An upgrade error behind it names it."""
    db = watched(timeout=5)
    path = path_of(db)
    reading = threading.Event()
    upgrader_read = threading.Event()
    created = threading.Event()
    times: dict[str, float] = {}

    def reader():  # another program's read transaction: raw, uninstrumented
        conn = original_connect(path, isolation_level=None)
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM shop_item").fetchone()
        reading.set()
        time.sleep(1.2)
        times["reader_done"] = time.time()
        conn.execute("COMMIT")
        conn.close()

    def creator():
        upgrader_read.wait(5)
        times["create_start"] = time.time()
        Item.objects.using(db).create(name="c")  # CREATE-LINE
        times["create_end"] = time.time()
        created.set()

    def upgrader():
        reading.wait(5)
        with transaction.atomic(using=db):
            list(Item.objects.using(db).all())
            upgrader_read.set()
            # The creator now holds RESERVED and waits in its COMMIT for both readers.
            deadline = time.monotonic() + 5
            while not lock_is_held(path):
                assert time.monotonic() < deadline
                time.sleep(0.005)
            time.sleep(0.2)
            times["probe_held"] = time.time()
            Item.objects.using(db).create(name="u")  # UPGRADE-LINE

    errors = run_threads(reader, creator, upgrader)
    assert errors[0] is None and errors[1] is None
    assert isinstance(errors[2], OperationalError)
    assert str(errors[2]) == "database is locked"

    lw.settle()
    (busy,) = lw.events(kind="busy")
    assert busy["classification"] == "upgrade"
    assert busy["call_site"] == site("UPGRADE-LINE", "upgrader")
    assert busy["blocker_call_site"] == site("CREATE-LINE", "creator")
    assert busy["blocker_thread"] == "t1"

    creates = [
        q for q in lw.events(kind="query", thread="t1") if q["sql"].startswith("INSERT")
    ]  # fmt: skip
    (create,) = creates
    # The lock was held from (just after) the create's start until the reader let go.
    truth_ms = (times["reader_done"] - times["create_start"]) * 1000.0
    assert create["hold_ms"] >= truth_ms - 50
    assert create["hold_ms"] <= (times["create_end"] - times["create_start"]) * 1000.0 + 5
    # Its own wait was for readers, with the lock held.
    (own_wait,) = lw.events(kind="wait", thread="t1")
    assert own_wait["blocker_context"] == holders.READERS
    assert own_wait["outcome"] == "acquired"


RETURNING = "INSERT INTO shop_item (name, qty) VALUES (%s, 0) RETURNING id"


def test_an_unfetched_insert_returning_holds_from_its_statement_start(lw, watched):
    """INSERT ... RETURNING keeps the write lock until its row is fetched. While it
    waits to be fetched, the holder table shows it holding since its statement began,
    and a writer that gives up behind it names it and how long it had held."""
    db = watched(timeout=0.3)
    path = path_of(db)
    executed = threading.Event()
    done_waiting = threading.Event()
    times: dict[str, float] = {}

    def holder():
        with connections[db].cursor() as cursor:
            times["start"] = time.time()
            cursor.execute(RETURNING, ["r"])  # HOLD-LINE
            times["executed"] = time.time()
            executed.set()
            done_waiting.wait(10)
            assert cursor.fetchone() is not None  # the fetch that lets go of the lock

    def waiter():
        executed.wait(5)
        try:
            assert lock_is_held(path)  # ground truth: the lock outlived execute()
            table = holders.table_for(lw.store)
            (h, _abandoned), *others = [
                (h, a) for h, a in table.snapshot() if h.state == holders.HOLDING
            ]
            assert not others
            assert times["start"] <= h.since <= times["executed"]
            times["wait_start"] = time.time()
            Item.objects.using(db).create(name="w")  # WAIT-LINE
        finally:
            times["gave_up"] = time.time()
            done_waiting.set()

    errors = run_threads(holder, waiter)
    assert errors[0] is None
    assert isinstance(errors[1], OperationalError)
    assert str(errors[1]) == "database is locked"

    lw.settle()
    (busy,) = lw.events(kind="busy")
    assert busy["call_site"] == site("WAIT-LINE", "waiter")
    assert busy["blocker_call_site"] == site("HOLD-LINE", "holder")
    # Held since the statement began, until the waiter gave up: at least from the end
    # of execute() to the end of the 0.3 s wait, at most from its start to the error.
    least = (times["wait_start"] + 0.3 - times["executed"]) * 1000.0
    most = (times["gave_up"] - times["start"]) * 1000.0
    assert least - 5 <= busy["blocker_held_ms"] <= most + 5
    (insert,) = [q for q in lw.events(kind="query", thread="t0") if "RETURNING" in q["sql"]]
    assert insert["hold_ms"] >= (times["gave_up"] - times["executed"]) * 1000.0 - 5


def test_autocommit_write_holds_the_lock_while_its_commit_waits(lw, watched):
    """Rollback journal: an UPDATE takes the lock first and waits for readers second;
    a writer behind it in that time is blocked by it, not by 'unknown'."""
    db = watched(timeout=5)
    path = path_of(db)
    Item.objects.using(db).create(name="x")
    reading = threading.Event()
    times: dict[str, float] = {}

    def reader():
        conn = original_connect(path, isolation_level=None)
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM shop_item").fetchone()
        reading.set()
        time.sleep(1.0)
        conn.execute("COMMIT")
        conn.close()

    def updater():
        reading.wait(5)
        times["update_start"] = time.time()
        Item.objects.using(db).filter(name="x").update(name="y")  # UPDATE-LINE
        times["update_end"] = time.time()

    def writer():
        reading.wait(5)
        deadline = time.monotonic() + 5
        while not lock_is_held(path):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        Item.objects.using(db).create(name="w")  # WRITER-LINE

    errors = run_threads(reader, updater, writer)
    assert errors == [None, None, None]
    lw.settle()
    (wait,) = lw.events(kind="wait", thread="t2")
    assert wait["call_site"] == site("WRITER-LINE", "writer")
    assert wait["blocker_call_site"] == site("UPDATE-LINE", "updater")
    assert wait["blocker_thread"] == "t1"
    (share,) = split_of(wait)
    assert share["kind"] == "holder"
    (update,) = [q for q in lw.events(kind="query", thread="t1") if q["sql"].startswith("UPDATE")]
    # Its hold includes its wait for the reader.
    assert update["hold_ms"] >= 900
    assert update["hold_ms"] <= (times["update_end"] - times["update_start"]) * 1000.0 + 5


OUTSIDE = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print(time.time(), flush=True)
time.sleep(float(sys.argv[2]))
t = time.time()
conn.execute("COMMIT")
print(t, flush=True)
"""


def test_an_outside_holder_is_not_blamed_on_quick_instrumented_writers(lw, watched):
    db = watched(timeout=3)
    path = path_of(db)
    outside = subprocess.Popen(
        [sys.executable, "-c", OUTSIDE, path, "1.0"], stdout=subprocess.PIPE, text=True
    )
    start = float(outside.stdout.readline())
    assert lock_is_held(path)

    def writer():
        for _ in range(8):
            Item.objects.using(db).create(name="q")  # QUICK-LINE

    errors = run_threads(writer, writer, writer)
    end = float(outside.stdout.readline())
    outside.wait(10)
    assert errors == [None, None, None]
    lw.settle()
    waits = lw.events(kind="wait")
    assert waits
    behind_outside = 0
    for w in waits:
        w_start, w_end = w["ts"], w["ts"] + w["wait_ms"] / 1000.0
        overlap = max(0.0, min(w_end, end) - max(w_start, start))
        outside_ms = sum(s["ms"] for s in split_of(w) if s["kind"] == holders.OUTSIDE)
        if overlap > 0.5 * (w_end - w_start):
            behind_outside += 1
            assert w["blocker_context"] == holders.OUTSIDE, w
            assert w["blocker_call_site"] == holders.OUTSIDE
            # The operating system named the outside program's process.
            assert w["blocker_pid"] == outside.pid
            # The split says most of it was behind the outside program.
            assert outside_ms >= 0.5 * w["wait_ms"]
        if w["blocker_context"] == holders.READERS:
            # (Rollback journal: a writer's commit waited for another writer's SHARED
            # lock, taken before that one found the lock held. Rare; likelier when loaded.)
            assert w["blocker_call_site"] == holders.READERS
        elif w["blocker_context"] != holders.OUTSIDE:
            assert w["blocker_call_site"] == site("QUICK-LINE", "writer")
    assert behind_outside >= 3  # each writer waited behind it at least once


def test_two_connections_in_one_thread_name_the_blocker_and_say_so(lw, watched):
    db = watched(timeout=0.3)
    other = f"{db}_again"  # the same file through another alias
    cfg = dict(connections.settings[db])
    connections.settings[other] = cfg
    lw.cleanups.append(lambda: connections.settings.pop(other))

    def one_thread():
        with transaction.atomic(using=db):
            Item.objects.using(db).create(name="first")  # FIRST-LINE
            Item.objects.using(other).create(name="second")  # SECOND-LINE

    (error,) = run_threads(one_thread)
    assert isinstance(error, OperationalError)
    lw.settle()
    (busy,) = lw.events(kind="busy")
    assert busy["classification"] == "timeout"
    assert busy["call_site"] == site("SECOND-LINE", "one_thread")
    assert busy["blocker_call_site"] == site("FIRST-LINE", "one_thread")
    assert busy["blocker_thread"] == busy["thread"] == "t0"
    assert busy["blocker_same_thread"] == 1


WAITER = """
import os, sys, time
sys.path.insert(0, os.environ["LW_ROOT"])
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.project.settings"
import django
django.setup()
from django.db import OperationalError
from tests.project.shop.models import Item
try:
    Item.objects.create(name="late")  # EXITING-LINE
except OperationalError as exc:
    print("failed:", exc)
"""


def test_a_process_that_exits_at_once_leaves_no_blank_blocker(lw, tmp_path: Path):
    """The waiter names its blocker itself: nothing is left for a later flush to attribute."""
    db = tmp_path / "shared.sqlite3"
    env = project_env(db, lw.store, LW_ROOT=str(HERE.parents[1]), LOCKWATCH_TEST_TIMEOUT="0.3")
    manage = HERE.parent / "project" / "manage.py"
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [sys.executable, str(manage), "hold_lock", "--seconds", "1.0", "--ready-file", str(ready)],
        env=env,
    )
    deadline = time.monotonic() + 20
    while not ready.exists():
        assert holder.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    out = subprocess.run(
        [sys.executable, "-c", WAITER], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "failed: database is locked", out.stderr
    holder.wait(30)
    rows = lw.rows("SELECT * FROM events WHERE kind IN ('wait', 'busy')")
    assert {r["kind"] for r in rows} == {"wait", "busy"}
    for r in rows:
        assert r["blocker_context"] == "command:hold_lock", r
        assert r["blocker_pid"] == holder.pid


def _shared_write(db: str) -> None:
    Item.objects.using(db).create(name="shared")  # SHARED-LINE


def test_a_shared_helper_keeps_the_view_that_called_it(lw, watched):
    """Waits, busy errors and transaction begins keep the user's stack, innermost first."""
    db = watched(timeout=0.3)
    locked = threading.Event()

    def holder():
        with transaction.atomic(using=db):  # HOLDER-BEGIN
            Item.objects.using(db).create(name="h")
            locked.set()
            time.sleep(0.8)

    def checkout_view():
        locked.wait(5)
        _shared_write(db)  # VIEW-CALL

    errors = run_threads(holder, checkout_view)
    assert errors[0] is None and isinstance(errors[1], OperationalError)
    lw.settle()
    # run_threads' wrapper (tests/conftest.py) is the user's code too: the outermost frame.
    outer = "tests/conftest.py:"
    expected = [site("SHARED-LINE", "_shared_write"), site("VIEW-CALL", "checkout_view")]
    (busy,) = lw.events(kind="busy")
    assert busy["user_stack"].split(" < ")[:2] == expected
    assert busy["user_stack"].split(" < ")[2].startswith(outer)
    assert busy["call_site"] == site("SHARED-LINE", "_shared_write")
    (wait,) = lw.events(kind="wait")
    assert wait["user_stack"] == busy["user_stack"]
    (txn,) = lw.events(kind="transaction", thread="t0")
    first, second = txn["user_stack"].split(" < ")
    assert first == site("HOLDER-BEGIN", "holder") and second.startswith(outer)
