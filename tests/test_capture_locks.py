"""Real SQLite files, real threads, real locks: what capture records."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from django.db import OperationalError, connections, transaction

from tests.conftest import line_of, run_threads
from tests.project.shop.models import Item

HERE = Path(__file__)


def site(marker: str, function: str) -> str:
    return f"tests/{HERE.name}:{line_of(HERE, marker)} in {function}"


def test_timeout_names_the_blocker(lw, watched):
    db = watched(timeout=0.5)
    locked = threading.Event()

    def holder():
        with transaction.atomic(using=db):
            Item.objects.using(db).create(name="a")  # HOLDER-WRITE
            locked.set()
            time.sleep(1.5)

    def waiter():
        locked.wait(5)
        Item.objects.using(db).create(name="b")  # WAITER-WRITE

    errors = run_threads(holder, waiter)
    assert errors[0] is None
    assert isinstance(errors[1], OperationalError)
    assert str(errors[1]) == "database is locked"

    lw.settle()
    (busy,) = lw.events(kind="busy")
    assert busy["classification"] == "timeout"
    assert busy["error_name"] == "SQLITE_BUSY"
    # Measured late, never early: the whole timeout, at most the statement's own time.
    assert 500 <= busy["wait_ms"] <= busy["duration_ms"]
    assert busy["call_site"] == site("WAITER-WRITE", "waiter")
    assert busy["blocker_call_site"] == site("HOLDER-WRITE", "holder")
    assert busy["blocker_thread"] == "t0"
    assert busy["thread"] == "t1"
    assert busy["context"].startswith("test:tests/test_capture_locks.py::test_timeout")
    assert busy["blocker_context"] == busy["context"]
    assert busy["capture_mode"] == "exact"
    (wait,) = lw.events(kind="wait")
    assert wait["outcome"] == "gave_up"
    assert wait["wait_ms"] == busy["wait_ms"]
    (txn,) = [t for t in lw.events(kind="transaction") if t["thread"] == "t0"]
    assert txn["end"] == "commit"
    # Held at least through the sleep, at most for the whole transaction.
    assert 1500 <= txn["hold_ms"] <= txn["duration_ms"]
    assert txn["lock_call_site"] == site("HOLDER-WRITE", "holder")
    assert txn["begin_mode"] == "deferred"


def test_read_then_write_upgrade_fails_at_once(lw, watched):
    db = watched()  # rollback journal, deferred transactions
    both_read = threading.Barrier(2)
    a_wrote = threading.Event()

    def a():
        with transaction.atomic(using=db):
            Item.objects.using(db).count()
            both_read.wait(5)
            Item.objects.using(db).create(name="a")  # A-WRITE
            a_wrote.set()
            time.sleep(0.3)

    def b():
        with transaction.atomic(using=db):
            Item.objects.using(db).count()  # B-READ
            list(Item.objects.using(db).filter(name="x"))  # B-READ-AGAIN
            both_read.wait(5)
            a_wrote.wait(5)
            Item.objects.using(db).create(name="b")  # B-WRITE

    errors = run_threads(a, b)
    assert errors[0] is None
    assert isinstance(errors[1], OperationalError)
    lw.settle()
    (busy,) = lw.events(kind="busy")
    assert busy["classification"] == "upgrade"
    assert busy["wait_ms"] == 0
    assert busy["duration_ms"] < 50
    assert busy["call_site"] == site("B-WRITE", "b")
    assert busy["blocker_call_site"] == site("A-WRITE", "a")
    assert lw.events(kind="wait", thread="t1") == []
    # Its cause: the reads its transaction ran before the write, in order, with the
    # busy error and with the transaction that rolled back.
    reads = json.loads(busy["txn_reads"])
    assert [r["call_site"] for r in reads] == [site("B-READ", "b"), site("B-READ-AGAIN", "b")]
    assert reads[0]["ts"] <= reads[1]["ts"] <= busy["ts"]
    assert all(r["ms"] >= 0 for r in reads)
    (failed,) = [t for t in lw.events(kind="transaction", thread="t1") if t["end"] == "rollback"]
    assert json.loads(failed["txn_reads"]) == reads
    # A transaction that neither failed nor waited long keeps none (a store of reads
    # for every transaction would cost every request).
    (ok,) = [t for t in lw.events(kind="transaction", thread="t0") if t["end"] == "commit"]
    assert ok["txn_reads"] is None


def test_stale_wal_snapshot(lw, watched):
    db = watched(journal="wal")
    b_read = threading.Event()
    a_done = threading.Event()

    def a():
        b_read.wait(5)
        Item.objects.using(db).create(name="a")  # A-COMMITTED-WRITE
        a_done.set()

    def b():
        with transaction.atomic(using=db):
            Item.objects.using(db).count()
            b_read.set()
            a_done.wait(5)
            Item.objects.using(db).create(name="b")  # B-STALE-WRITE

    errors = run_threads(a, b)
    assert errors[0] is None
    assert isinstance(errors[1], OperationalError)
    lw.settle()
    (busy,) = lw.events(kind="busy")
    assert busy["classification"] == "snapshot"
    assert busy["error_code"] == 517
    assert busy["error_name"] == "SQLITE_BUSY_SNAPSHOT"
    assert busy["call_site"] == site("B-STALE-WRITE", "b")
    assert busy["blocker_call_site"] == site("A-COMMITTED-WRITE", "a")


def test_begin_immediate_waits_then_succeeds(lw, watched):
    db = watched(journal="wal", transaction_mode="IMMEDIATE")
    locked = threading.Event()

    def a():
        with transaction.atomic(using=db):  # A-BEGIN
            locked.set()
            Item.objects.using(db).create(name="a")
            time.sleep(0.3)

    def b():
        locked.wait(5)
        with transaction.atomic(using=db):  # B-BEGIN
            Item.objects.using(db).create(name="b")

    assert run_threads(a, b) == [None, None]
    lw.settle()
    assert lw.events(kind="busy") == []
    (wait,) = lw.events(kind="wait")
    assert wait["sql"] == "BEGIN IMMEDIATE"
    assert wait["outcome"] == "acquired"
    # Most of a's sleep (b starts once a has signalled), at most b's transaction.
    txns = {t["thread"]: t for t in lw.events(kind="transaction")}
    assert 300 * 0.85 <= wait["wait_ms"] <= txns["t1"]["duration_ms"]
    assert wait["call_site"] == site("B-BEGIN", "b")
    assert wait["blocker_call_site"] == site("A-BEGIN", "a")
    txns = {t["thread"]: t for t in lw.events(kind="transaction")}
    assert txns["t0"]["begin_mode"] == "immediate"
    assert txns["t0"]["lock_sql"] == "BEGIN IMMEDIATE"
    assert txns["t1"]["wait_ms"] == wait["wait_ms"]


def test_commit_waits_for_a_reader(lw, watched):
    db = watched()  # rollback journal: COMMIT needs every reader gone
    reading = threading.Event()

    def reader():
        with transaction.atomic(using=db):
            Item.objects.using(db).count()
            reading.set()
            time.sleep(0.3)

    spent = {}

    def writer():
        reading.wait(5)
        t0 = time.perf_counter()
        with transaction.atomic(using=db):  # WRITER-ATOMIC
            Item.objects.using(db).create(name="w")
        spent["ms"] = (time.perf_counter() - t0) * 1000.0

    assert run_threads(reader, writer) == [None, None]
    lw.settle()
    (wait,) = lw.events(kind="wait")
    assert wait["stmt_class"] == "commit"
    assert wait["sql"] == "COMMIT"
    assert wait["outcome"] == "acquired"
    # Measured late, never early: at least most of the reader's sleep, at most the block.
    assert 0.85 * 300 * 0.5 < wait["wait_ms"] <= spent["ms"]
    assert wait["thread"] == "t1"
    assert wait["blocker_context"] == "readers"


def test_later_pragma_busy_timeout_is_honoured(lw, watched):
    db = watched(timeout=5)
    locked = threading.Event()

    def holder():
        with transaction.atomic(using=db):
            Item.objects.using(db).create(name="a")
            locked.set()
            time.sleep(0.8)

    def waiter():
        with connections[db].cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout = 200")
        locked.wait(5)
        Item.objects.using(db).create(name="b")

    errors = run_threads(holder, waiter)
    assert isinstance(errors[1], OperationalError)
    (busy,) = lw.events(kind="busy")
    assert busy["classification"] == "timeout"
    assert 200 <= busy["wait_ms"] <= busy["duration_ms"]


def test_a_hold_row_is_open_while_the_lock_is_held_and_ends_with_its_transaction(lw, watched):
    db = watched()
    holds = 'SELECT context, end_ts, "end" FROM holds WHERE lock_ts > ? ORDER BY lock_ts'
    start = (time.time(),)  # after the table was made, itself a hold
    with transaction.atomic(using=db):
        Item.objects.using(db).create(name="held across a flush")
        (row,) = lw.rows(holds, start)  # rows() flushes: other processes can see the holder
        assert row["end_ts"] is None and row["end"] is None
    with transaction.atomic(using=db):
        # Usually taken and let go within one flush: its row is then written already over.
        Item.objects.using(db).create(name="short")
    rows = lw.rows(holds, start)
    assert [r["end"] for r in rows] == ["commit", "commit"]
    txns = [t for t in lw.events(kind="transaction") if t["lock_ts"] and t["lock_ts"] > start[0]]
    assert sorted(r["end_ts"] for r in rows) == pytest.approx(
        sorted(t["ts"] + t["duration_ms"] / 1000.0 for t in txns), abs=1e-6
    )
    assert all(r["context"] == txns[0]["context"] for r in rows)
