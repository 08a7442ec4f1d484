"""Quiet writes (issue 18): a write nobody waited for, that did not fail and held the
lock under HOLD_RECORD_MS, is counted by call site and bin, not stored as an event; every
other write is stored in full. The readers (durations, call sites, doctor, header) give
the same figures either way."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import IntegrityError, connections, transaction

from lockwatch import doctor, holderview, store
from lockwatch.dashboard import queries
from lockwatch.store import rollup
from tests.conftest import ROOT, line_of, lw_settings, run_threads
from tests.project.shop.models import Item
from tests.support.servers import project_env

HERE = Path(__file__)
MANAGE = ROOT / "tests" / "project" / "manage.py"


def site(marker: str, function: str) -> str:
    return f"tests/test_quiet_writes.py:{line_of(HERE, marker)} in {function}"


def hold_record(lw, ms: float) -> None:
    """This test's LOCKWATCH with HOLD_RECORD_MS set."""
    lw_settings(lw, HOLD_RECORD_MS=ms)


def quiet(lw) -> list[dict]:
    return lw.rows("SELECT * FROM quiet ORDER BY id")


def test_a_quiet_write_is_counted_with_its_call_site_and_hold_not_stored(lw, watched):
    hold_record(lw, 1000)  # far over these holds, even on a loaded machine
    db = watched()
    lw.flush()  # the fixture's own (quiet) schema transaction: in a batch, and rows, of its own
    t0 = time.time()
    for i in range(5):
        Item.objects.using(db).create(name=f"q{i}")  # QUIET-CREATE
    with transaction.atomic(using=db):
        Item.objects.using(db).create(name="a")  # QUIET-FIRST
        Item.objects.using(db).create(name="b")
    fn = "test_a_quiet_write_is_counted_with_its_call_site_and_hold_not_stored"
    create = site("QUIET-CREATE", fn)
    # No event for any of them: not as queries, not as transactions.
    stored = [e for e in lw.rows() if e["kind"] in ("query", "transaction")]
    assert stored == []
    rows = [r for r in quiet(lw) if r["ts"] >= t0]
    writes = [r for r in rows if r["series"] == rollup.WRITE]
    assert sum(r["n"] for r in writes) == 5
    assert {r["site"] for r in writes} == {create}
    for r in writes:
        assert r["total_ms"] > 0 and r["max_ms"] < 1000 and r["total_ms"] <= r["n"] * r["max_ms"]
    # The transaction: its hold at its first write's line, and its wall time.
    (txn,) = [r for r in rows if r["series"] == rollup.TXN]
    assert txn["n"] == 1 and txn["site"] == site("QUIET-FIRST", fn)
    assert sum(r["n"] for r in rows if r["series"] == rollup.DURATION) == 1
    # In the minute rollup with the same counts and totals.
    minute = {
        (r["series"], r["site"]): (r["n"], r["t"])
        for r in lw.rows(
            "SELECT series, site, sum(n) AS n, sum(total_ms) AS t FROM rollup"
            " WHERE span = ? GROUP BY 1, 2",
            (rollup.MINUTE,),
        )
    }
    assert minute[rollup.WRITE, create][0] == 5
    assert math.isclose(minute[rollup.WRITE, create][1], sum(r["total_ms"] for r in writes))
    assert minute[rollup.TXN, txn["site"]][0] == 1
    # The process counted them as stored: nothing looks lost.
    (proc,) = lw.rows("SELECT * FROM processes")
    assert proc["lost"] == 0 and proc["dropped"] == 0


def test_slow_and_failed_writes_are_stored_in_full(lw, watched):
    hold_record(lw, 10)  # the default
    db = watched()
    with transaction.atomic(using=db):  # SLOW-ATOMIC
        Item.objects.using(db).create(name="slow")
        time.sleep(0.03)
    first = Item.objects.using(db).create(name="unique")
    with pytest.raises(IntegrityError), transaction.atomic(using=db):  # FAILED-ATOMIC
        Item.objects.using(db).create(id=first.pk, name="dup")
    with pytest.raises(IntegrityError):
        Item.objects.using(db).create(id=first.pk, name="dup")  # FAILED-CREATE
    fn = "test_slow_and_failed_writes_are_stored_in_full"
    txns = {t["call_site"]: t for t in lw.events(kind="transaction")}
    slow = txns[site("SLOW-ATOMIC", fn)]
    assert slow["hold_ms"] >= 30 and slow["end"] == "commit"
    failed = txns[site("FAILED-ATOMIC", fn)]
    assert failed["end"] != "commit"
    (create,) = [q for q in lw.events(kind="query") if q["call_site"] == site("FAILED-CREATE", fn)]
    assert create["sql"].startswith("INSERT INTO")


def test_a_write_that_made_another_wait_is_stored_however_short(lw, watched):
    """The threshold set so high that only the waiter's mark can keep the holder's
    transaction: with a waiter it is stored, without one (same shape) it is quiet."""
    hold_record(lw, 60_000)
    db = watched(journal="wal")
    locked = threading.Event()
    waiting = threading.Event()

    def holder():
        with transaction.atomic(using=db):  # HOLDER-ATOMIC
            Item.objects.using(db).create(name="h")  # HOLDER-WRITE
            locked.set()
            waiting.wait(5)
            time.sleep(0.3)  # the waiter is in the busy handler, looking at our slot

    def waiter():
        locked.wait(5)
        waiting.set()
        Item.objects.using(db).create(name="w")  # WAITER-CREATE

    def alone():
        with transaction.atomic(using=db):  # ALONE-ATOMIC
            Item.objects.using(db).create(name="a")
            time.sleep(0.3)

    lw.flush()  # the fixture's own (quiet) schema transaction: in a batch, and rows, of its own
    t0 = time.time()
    assert run_threads(holder, waiter) == [None, None]
    assert run_threads(alone) == [None]
    lw.settle()
    (wait,) = lw.events(kind="wait")
    assert wait["call_site"] == site("WAITER-CREATE", "waiter")
    assert wait["blocker_call_site"] == site("HOLDER-WRITE", "holder")
    txns = {t["call_site"]: t for t in lw.events(kind="transaction")}
    held = txns[site("HOLDER-ATOMIC", "holder")]
    assert held["hold_ms"] >= 300 * 0.85
    assert site("ALONE-ATOMIC", "alone") not in txns
    # The quiet one is counted: its hold at its first write's line.
    (txn,) = [r for r in quiet(lw) if r["series"] == rollup.TXN and r["ts"] >= t0]
    assert txn["n"] == 1 and txn["max_ms"] >= 300 * 0.85
    # The waiter's own write waited: stored.
    assert any(q["call_site"] == site("WAITER-CREATE", "waiter") for q in lw.events(kind="query"))


SLOW_WRITES = {
    # The lock is taken as the statement starts, before lw_sleep runs.
    "update": ("UPDATE shop_item SET qty = lw_sleep(0.3) WHERE name = 'seed'", False),
    "insert-returning": (
        "INSERT INTO shop_item (name, qty) VALUES ('r', lw_sleep(0.3)) RETURNING id",
        True,
    ),
}


@pytest.mark.parametrize("shape", list(SLOW_WRITES))
def test_an_autocommit_write_that_made_another_wait_is_stored_however_short(lw, watched, shape):
    """The same for one autocommit statement (no transaction): with a waiter it is
    stored, without one it is quiet."""
    hold_record(lw, 60_000)
    db = watched(journal="wal")
    Item.objects.using(db).create(name="seed")
    sql, returning = SLOW_WRITES[shape]
    running = threading.Event()

    def lw_sleep(seconds: float) -> int:
        running.set()
        time.sleep(seconds)
        return 1

    def write() -> None:
        connections[db].ensure_connection()
        connections[db].connection.create_function("lw_sleep", 1, lw_sleep)
        with connections[db].cursor() as cursor:
            cursor.execute(sql)  # SLOW-WRITE
            if returning:
                assert cursor.fetchone()

    def holder():
        write()

    def waiter():
        assert running.wait(5)
        time.sleep(0.05)  # well inside the holder's statement
        Item.objects.using(db).create(name="w")

    lw.flush()
    # Alone first: the same statement, nobody waiting. (Then the statement is known, and
    # the one with a waiter takes capture's fast path, as a repeated statement does.)
    assert run_threads(holder) == [None]
    running.clear()
    assert run_threads(holder, waiter) == [None, None]
    lw.settle()
    (wait,) = lw.events(kind="wait")
    assert wait["blocker_call_site"] == site("SLOW-WRITE", "write")
    slow = [q for q in lw.events(kind="query") if q["call_site"] == site("SLOW-WRITE", "write")]
    assert len(slow) == 1, slow  # the one that made the waiter wait; not the one alone
    assert slow[0]["hold_ms"] >= 300 * 0.85
    assert slow[0]["ts"] < wait["ts"] + wait["wait_ms"] / 1000
    counted = [r for r in quiet(lw) if r["site"] == site("SLOW-WRITE", "write")]
    assert sum(r["n"] for r in counted) == 1
    assert max(r["max_ms"] for r in counted) >= 300 * 0.85


def test_a_write_that_made_another_process_wait_is_stored(lw, watched):
    """The same across processes: the waiter is `manage.py write_one` in another process,
    seen waiting in the holder table before the holder commits."""
    hold_record(lw, 60_000)
    db = watched(journal="delete")
    path = connections[db].settings_dict["NAME"]
    env = project_env(path, lw.store, migrate=False)
    waiter = None
    lw.flush()  # the fixture's own (quiet) schema transaction: in a batch, and rows, of its own
    t0 = time.time()
    try:
        with transaction.atomic(using=db):  # PROC-HOLDER
            Item.objects.using(db).create(name="h")  # PROC-WRITE
            waiter = subprocess.Popen(
                [sys.executable, str(MANAGE), "write_one"], cwd=ROOT, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            deadline = time.monotonic() + 30
            while not any(w.waiter.pid == waiter.pid for w in holderview.waiting_now(lw.store)):
                assert waiter.poll() is None, waiter.communicate()
                assert time.monotonic() < deadline, "the waiter never waited"
                time.sleep(0.01)
        out, err = waiter.communicate(timeout=30)
    finally:
        if waiter is not None and waiter.poll() is None:
            waiter.kill()
    assert out.strip() == "ok", err
    lw.settle()
    fn = "test_a_write_that_made_another_process_wait_is_stored"
    (wait,) = lw.events(kind="wait", pid=waiter.pid)
    assert wait["blocker_pid"] == os.getpid()
    assert wait["blocker_call_site"] == site("PROC-WRITE", fn)
    (held,) = lw.events(kind="transaction", pid=os.getpid())
    assert held["call_site"] == site("PROC-HOLDER", fn)
    assert held["hold_ms"] >= wait["wait_ms"] * 0.85
    assert [r for r in quiet(lw) if r["pid"] == os.getpid() and r["ts"] >= t0] == []


def _scenario(db: str) -> dict[str, int]:
    """Quick creates, quick transactions, slow ones, and one that makes another wait."""
    for i in range(40):
        Item.objects.using(db).create(name=f"c{i}")  # MIX-CREATE
    for i in range(10):
        with transaction.atomic(using=db):
            Item.objects.using(db).create(name=f"t{i}")  # MIX-QUICK
    for i in range(3):
        with transaction.atomic(using=db):
            Item.objects.using(db).create(name=f"s{i}")  # MIX-SLOW
            time.sleep(0.02)
    locked = threading.Event()

    def holder():
        with transaction.atomic(using=db):
            Item.objects.using(db).create(name="h")  # MIX-HOLD
            locked.set()
            time.sleep(0.3)

    def waiter():
        locked.wait(5)
        Item.objects.using(db).create(name="w")  # MIX-WAITER

    assert run_threads(holder, waiter) == [None, None]
    return {"create": 40, "quick": 10, "slow": 3, "hold": 1, "waiter": 1}


@pytest.mark.parametrize("ms", [0, 10])
def test_the_readers_count_every_write_either_way(lw, watched, ms):
    """With every write stored (0) and with quick ones quiet (10, the default), the
    durations chart, the call-sites table, the header and the doctor give the scenario's
    counts, and the doctor's hold figure for the blocker stays exact."""
    hold_record(lw, ms)
    db = watched(journal="wal")
    lw.flush()  # the fixture's own (quiet) schema transaction: in a batch, and rows, of its own
    since = time.time()
    made = _scenario(db)
    lw.settle()
    conn = store.connect(lw.store, readonly=True)
    try:
        until = time.time() + 1
        h = queries.durations(conn, since, until)
        sites = {cs.site: cs for cs in queries.call_sites(conn, since, until, limit=100)}
        header = queries.header(conn, since, until)
        found = doctor.findings(conn, since, until)
    finally:
        conn.close()

    def at(marker: str, fn: str) -> queries.CallSite:
        return sites[site(marker, fn)]

    # Each write's hold under its own line: a transaction's at its first write.
    assert at("MIX-CREATE", "_scenario").holds == made["create"]
    assert at("MIX-QUICK", "_scenario").holds == made["quick"]
    assert at("MIX-SLOW", "_scenario").holds == made["slow"]
    assert at("MIX-HOLD", "holder").holds == 1
    assert at("MIX-WAITER", "waiter").holds == 1
    assert sum(h.holds) == sum(made.values())
    assert sum(h.durations) == made["quick"] + made["slow"] + made["hold"]
    # The slow ones are stored in either mode: their p95 exact, at least their sleep.
    slow = at("MIX-SLOW", "_scenario")
    assert not slow.p95_estimated and slow.p95_hold_ms is not None and slow.p95_hold_ms >= 20
    assert header.worst_hold_ms is not None and header.worst_hold_ms >= 300 * 0.85
    hold = at("MIX-HOLD", "holder")
    assert hold.waits_caused == 1
    (finding,) = [f for f in found if f.call_site == site("MIX-HOLD", "holder")]
    assert finding.figures["waits"] == 1
    assert finding.figures["p95_hold_ms"] >= 300 * 0.85
    assert finding.figures["p95_estimated"] is False
    events = lw.rows(
        "SELECT count(*) AS n FROM events WHERE kind IN ('query', 'transaction') AND ts >= ?",
        (since,),
    )
    if ms == 0:
        assert events[0]["n"] == sum(made.values())
    else:  # the quick ones quiet; a rare slow create on a loaded machine is stored
        assert events[0]["n"] < made["create"] // 2 + made["slow"] + 2


def test_summary_is_exact_when_the_percentile_falls_among_stored_values():
    rng = random.Random(18)
    for _ in range(300):
        values = sorted(rng.choice([rng.uniform(0.01, 9.99), rng.uniform(10, 500)])
                        for _ in range(rng.randint(1, 60)))  # fmt: skip
        stored = [v for v in values if v >= 10]
        folded = rollup.Hist()
        for v in values:
            if v < 10:
                b = rollup.bin_of(v)
                folded.n[b] += 1
                folded.total[b] += v
        n, total, p95, estimated = rollup.summary(stored, folded if folded.count else None)
        assert n == len(values)
        assert math.isclose(total, math.fsum(values))
        truth = values[rollup.nearest_rank(len(values), 95) - 1]
        if truth >= 10:
            assert not estimated and p95 == truth
        else:
            assert estimated and p95 is not None
            b = rollup.bin_of(truth)  # the estimate stays inside the true value's bin
            assert rollup.bin_of(p95) == b


def test_retention_drops_quiet_rows_and_their_rollup_share(tmp_path: Path):
    from lockwatch import events

    writer = store.Writer(tmp_path / "store.sqlite3")
    now = time.time()
    old = [
        rollup.QuietRow(
            now - 7200 + i, now - 7200 + i, "db", 1, rollup.WRITE, "a.py:1", 3, 2, 1.0, 0.6
        )
        for i in range(10)
    ]
    new = [rollup.QuietRow(now - 10, now - 10, "db", 1, rollup.WRITE, "a.py:1", 3, 5, 2.5, 0.6)]
    writer.write(
        [events.row(kind="query", ts=now - 10, sql="SELECT 1")], [], [], quiet=old + new, folded=25
    )

    def totals() -> tuple[int, int]:
        (q,) = writer.conn.execute("SELECT sum(n) FROM quiet").fetchone()
        (r,) = writer.conn.execute(
            f"SELECT sum(n) FROM rollup WHERE span = {rollup.MINUTE} AND series = 'write'"
        ).fetchone()
        return q, r

    assert totals() == (25, 25)
    writer.prune(max_age=3600, max_rows=None, batch=1000)
    assert totals() == (5, 5)
    writer.prune(max_age=None, max_rows=0, batch=1000)
    assert totals() == (None, None)
    writer.close()
