"""The doctor: each piece of advice comes from a real scenario's evidence."""

from __future__ import annotations

import math
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core import checks
from django.db import OperationalError, connections, transaction
from django.test import override_settings

from lockwatch import doctor, events, store
from lockwatch.dashboard import queries
from lockwatch.store import rollup
from tests.conftest import ROOT, line_of, run_threads
from tests.project.shop.models import Item
from tests.scenarios import (
    commit_behind_reader,
    hold_then_write,
    reads_behind_commit,
    retry_until_written,
    short_writes,
    two_connections_in_one_thread,
)

SCENARIOS = ROOT / "tests" / "scenarios.py"


HERE = Path(__file__)


def _findings(lw) -> dict[str, doctor.Finding]:
    lw.settle()
    conn = sqlite3.connect(lw.store)
    found = doctor.findings(conn)
    return {f.code: f for f in found}


def test_upgrade_errors_advise_immediate(lw, watched):
    db = watched()
    both_read = threading.Barrier(2)
    first = threading.Lock()

    def read_then_write():
        try:
            with transaction.atomic(using=db):
                Item.objects.using(db).count()
                both_read.wait(5)
                if first.acquire(blocking=False):
                    Item.objects.using(db).create(name="first")
                    time.sleep(0.2)
                else:
                    time.sleep(0.05)
                    Item.objects.using(db).create(name="second")  # CHECKOUT
        except OperationalError:
            pass

    run_threads(read_then_write, read_then_write)
    found = _findings(lw)
    f = found["upgrade"]
    assert f.title.startswith("1 `upgrade` busy error at `tests/test_doctor.py:")
    assert "in read_then_write" in f.title
    assert '"transaction_mode": "IMMEDIATE"' in f.change


def test_timeouts_name_the_blocker_and_its_p95_hold(lw, watched, request):
    db = watched(journal="wal", timeout=0.3)
    errors = hold_then_write(db, 1.2)
    assert isinstance(errors[1], OperationalError)
    found = _findings(lw)
    f = found["timeout"]
    hold = line_of(SCENARIOS, "SCENARIO-HOLD")
    assert (
        f"1 `timeout` busy error in test:{request.node.nodeid}, 1 of them blocked by "
        f"`tests/scenarios.py:{hold} in holder`" in (f.title)
    )
    assert f.figures["p95_hold_ms"] == pytest.approx(1200, rel=0.15)
    assert "move the slow work" in f.change
    assert "long-hold" not in found  # the same call site is not reported twice


def test_a_timeout_behind_a_holder_still_holding_says_how_long_it_had_held(lw, watched):
    """Its transaction has not ended, so no hold of it is stored: the finding gives how
    long the holder had held the lock when the error gave up, not a p95 of 0 ms."""
    db = watched(journal="wal", timeout=0.3)
    locked, failed = threading.Event(), threading.Event()
    found: dict[str, doctor.Finding] = {}

    def holder():
        with transaction.atomic(using=db):
            Item.objects.using(db).create(name="h")  # STILL-HOLDING
            locked.set()
            failed.wait(10)
            found.update(_findings(lw))  # while it still holds the lock

    def waiter():
        locked.wait(5)
        try:
            Item.objects.using(db).create(name="w")
        finally:
            failed.set()

    errors = run_threads(holder, waiter)
    assert errors[0] is None and isinstance(errors[1], OperationalError)
    f = found["timeout"]
    here = f"tests/test_doctor.py:{line_of(HERE, 'STILL-HOLDING')} in holder"
    assert f"1 of them blocked by `{here}`, which had held the write lock for " in f.title
    assert "p95" not in f.title
    value, unit = f.title.rsplit("for ", 1)[1].split()[:2]
    held_ms = float(value) * (1000.0 if unit == "s" else 1.0)
    assert held_ms >= 300 * 0.85  # at least the waiter's timeout: measured late, never early


def test_commit_waiting_for_readers_advises_wal(lw, watched):
    assert commit_behind_reader(watched(), 0.4) == [None, None]
    f = _findings(lw)["wal"]
    assert f.title.startswith("WAL would remove 1 wait (")
    assert f.evidence.startswith("1 COMMIT waited ")
    assert "enable WAL" in f.change
    assert 200 < f.figures["waited_ms"] < 460


def test_readers_blocked_by_a_committing_writer_are_counted_for_wal(lw, watched):
    """The third-party case: most waits were SELECTs behind a writer's COMMIT, which held
    PENDING while it waited for an older reader. WAL removes them all, and the doctor says so
    first, counting the reads, not only the COMMIT."""
    db = watched()
    assert reads_behind_commit(db, 0.6, 3) == [None] * 5
    lw.settle()
    found = doctor.findings(sqlite3.connect(lw.store))
    first = found[0]
    assert first.code == "wal"
    assert first.title.startswith("WAL would remove 4 waits (")
    assert first.title.endswith(" in total) under the rollback journal")
    assert first.evidence.startswith("3 reads blocked by a committing writer and 1 COMMIT waited ")
    assert first.figures["reads"] == 3 and first.figures["commits"] == 1
    assert "hidden-waits" not in {f.code for f in found}  # the reads are not counted twice


def test_hidden_waits_and_long_holds(lw, watched):
    db = watched(journal="wal", transaction_mode="IMMEDIATE")
    assert hold_then_write(db, 1.2) == [None, None]
    found = _findings(lw)
    waits = found["hidden-waits"]
    assert waits.figures["waits"] == 1
    assert waits.figures["waited_ms"] == pytest.approx(1200, rel=0.15)
    begin = line_of(SCENARIOS, "SCENARIO-BEGIN")  # IMMEDIATE: the lock is taken at BEGIN
    assert f"behind `tests/scenarios.py:{begin} in holder`" in waits.title
    assert waits.figures["p95_hold_ms"] == pytest.approx(1200, rel=0.15)
    assert "long-hold" not in found  # the same call site is not reported twice


def test_waits_behind_sub_millisecond_holds_are_the_busy_handler_schedule(lw, watched):
    """Three threads of short autocommit writes: each hold is well under a millisecond, yet
    the waits add up to seconds, SQLite's busy handler sleeping between tries."""
    db = watched(init_command="PRAGMA synchronous=OFF")
    assert short_writes(db, 3, 2.0) == [None] * 3
    found = _findings(lw)
    first = doctor.findings(sqlite3.connect(lw.store))[0]
    assert first.code == "busy-schedule"
    line = line_of(SCENARIOS, "SCENARIO-SHORT")
    assert f"behind `tests/scenarios.py:{line} in writer` (p95 hold " in first.title
    assert first.figures["p95_hold_ms"] < doctor.SHORT_HOLD_P95_MS
    assert "busy handler, which sleeps up to 100 ms between tries" in first.evidence
    assert first.change.startswith('enable WAL, set "transaction_mode": "IMMEDIATE"')
    assert "FAST_HANDOFF" in first.change
    assert "hidden-waits" not in found


def test_two_connections_in_one_thread_cannot_wait_their_way_out(lw, watched, tmp_path):
    db = watched(name="same.sqlite3")
    other = f"{db}b"  # a second alias on the same file
    connections.settings[other] = connections.configure_settings(
        {**connections.settings, other: {**connections.settings[db], "OPTIONS": {"timeout": 0.3}}}
    )[other]
    try:
        (error,) = two_connections_in_one_thread(db, other)
    finally:
        connections[other].close()
        del connections.settings[other]
    assert isinstance(error, OperationalError)
    lw.settle()
    first = doctor.findings(sqlite3.connect(lw.store))[0]
    second = line_of(SCENARIOS, "SCENARIO-SECOND-CONNECTION")
    held = line_of(SCENARIOS, "SCENARIO-FIRST-CONNECTION")
    assert first.title == (
        f"1 busy error at `tests/scenarios.py:{second} in both` in command:import: two "
        "connections in one thread; the other one holds the write lock, taken at "
        f"`tests/scenarios.py:{held} in both`"
    )
    assert "waiting cannot succeed" in first.evidence
    assert first.change == "use one connection for both, or commit before opening the second"
    assert first.failed


def test_retries_of_one_statement_are_one_story(lw, watched, request):
    """A statement retried after each 'database is locked' until it gets through: the
    doctor tells it once, as tries, not as busy errors that failed."""
    db = watched(timeout=0.5)
    assert retry_until_written(db, 1.5, 0.1) == [None, None]
    lw.settle()
    found = doctor.findings(sqlite3.connect(lw.store))
    first = found[0]
    retried = line_of(SCENARIOS, "SCENARIO-RETRIED")
    holder = line_of(SCENARIOS, "SCENARIO-RETRY-HOLDER")
    busy = lw.rows("SELECT count(*) AS n FROM events WHERE kind = 'busy'")[0]["n"]
    assert busy == 2  # tries at 0-0.5 s and 0.6-1.1 s fail; the third gets the lock at 1.5 s
    span = doctor.fmt_seconds(first.figures["span_ms"])
    assert first.title == (
        f"3 tries over {span} at `tests/scenarios.py:{retried} in retrying` in "
        f"test:{request.node.nodeid} behind "
        f"`tests/scenarios.py:{holder} in holder`, the last succeeded"
    )
    assert 1400 < first.figures["span_ms"] < 2500
    assert "timeout" not in {f.code for f in found}  # the busy errors are not told twice


def test_long_holds_without_waiters(lw, watched):
    db = watched(journal="wal")
    for _ in range(2):
        with transaction.atomic(using=db):
            Item.objects.using(db).create(name="slow")
            time.sleep(1.05)
    hold = _findings(lw)["long-hold"]
    assert hold.figures["transactions"] == 2
    assert hold.figures["p95_hold_ms"] == pytest.approx(1050, rel=0.15)
    assert "commit in smaller batches" in hold.change


def test_a_healthy_setup_has_no_findings(lw, watched):
    db = watched(journal="wal", transaction_mode="IMMEDIATE")

    def short_writes():
        for i in range(20):
            with transaction.atomic(using=db):
                Item.objects.using(db).create(name=str(i))

    assert run_threads(short_writes, short_writes) == [None, None]
    assert _findings(lw) == {}


def test_cli_doctor_prints_ranked_findings(lw, watched):
    db = watched(timeout=0.3)
    hold_then_write(db, 0.8)
    lw.settle()
    done = subprocess.run(
        [sys.executable, "-m", "lockwatch", "doctor", "--store", str(lw.store)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("1. 1 `timeout` busy error in test:")


DB = {
    "ENGINE": "lockwatch.db.backends.sqlite3",
    "OPTIONS": {},
}


def _ids(tmp_path, journal: str, **db) -> set[str]:
    path = tmp_path / "checked.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.close()
    databases = {"default": {**DB, "NAME": str(path), **db}}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Overriding setting DATABASES")
        with override_settings(DATABASES=databases):
            # The databases' advice is deploy advice: shown by check --deploy.
            found = checks.run_checks(tags=["lockwatch"], include_deployment_checks=True)
            return {m.id for m in found}


def test_checks_flag_a_default_configuration(tmp_path):
    ids = _ids(tmp_path, "delete", ATOMIC_REQUESTS=True, OPTIONS={"timeout": 1})
    assert {"lockwatch.W010", "lockwatch.W012", "lockwatch.W013", "lockwatch.W014"} <= ids


def test_checks_flag_a_replaced_timeout_and_full_sync(tmp_path):
    ids = _ids(
        tmp_path,
        "wal",
        OPTIONS={"transaction_mode": "IMMEDIATE", "init_command": "PRAGMA busy_timeout=100"},
    )
    assert ids == {"lockwatch.W011", "lockwatch.I015"}


def test_checks_pass_a_healthy_configuration(tmp_path):
    ids = _ids(
        tmp_path,
        "wal",
        OPTIONS={
            "transaction_mode": "IMMEDIATE",
            "timeout": 5,
            "init_command": "PRAGMA synchronous=NORMAL",
        },
    )
    assert ids == set()


def test_unwritable_store_is_a_warning(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with override_settings(LOCKWATCH={"STORE": str(blocker / "store.sqlite3")}):
        found = {m.id: m for m in checks.run_checks(tags=["lockwatch"])}
    # A warning, not an error: it must not stop migrate or runserver.
    assert found["lockwatch.W005"].level == checks.WARNING


def _long_store(path, now: float) -> None:
    """Three hours of transactions around the 1 s long-hold line, waits and timeouts."""
    rng = random.Random(5)
    medians = {"app/a.py:1 in a": 300.0, "app/b.py:2 in b": 700.0, "app/c.py:3 in c": 1300.0}
    constant = {"app/edge.py:4 in e": 1000.0, "app/under.py:5 in u": 999.99}
    rows = []
    for i in range(3000):
        ts = now - 3 * 3600 + i * 3.6 + rng.random()
        site = rng.choice([*medians, *constant])
        hold = constant.get(site) or round(rng.lognormvariate(math.log(medians[site]), 0.6), 3)
        rows.append(
            events.row(kind="transaction", ts=ts, hold_ms=hold, duration_ms=hold + 1.0,
                       call_site=site, lock_call_site=site, pid=1)
        )  # fmt: skip
        if i % 3 == 0:  # autocommit writes hold the lock too, but are no transactions
            rows.append(
                events.row(kind="query", ts=ts, hold_ms=5.0, duration_ms=5.0, pid=1,
                           stmt_class="write", call_site=rng.choice([*medians, *constant]))
            )  # fmt: skip
        if i % 5 == 0:
            wait = round(rng.lognormvariate(math.log(60.0), 1.0), 3)
            rows.append(
                events.row(kind="wait", ts=ts, wait_ms=wait, duration_ms=wait, pid=2,
                           outcome="acquired", stmt_class="write", call_site="app/w.py:9 in w",
                           blocker_call_site=rng.choice(list(medians)))
            )  # fmt: skip
        if i % 50 == 0:
            rows.append(
                events.row(kind="busy", ts=ts, classification="timeout", wait_ms=5000.0,
                           pid=2, call_site="app/w.py:9 in w",
                           blocker_call_site="app/c.py:3 in c")
            )  # fmt: skip
    writer = store.Writer(path)
    writer.write(rows, [], [])
    writer.close()


def test_a_long_window_estimates_p95s_and_decides_exactly(tmp_path):
    now = time.time()
    path = tmp_path / "long.sqlite3"
    _long_store(path, now)
    # The same events without a rollup: the doctor reads them all, exactly.
    exact_path = tmp_path / "exact.sqlite3"
    shutil.copy(path, exact_path)
    with sqlite3.connect(exact_path) as raw:
        raw.execute("DROP TABLE rollup")
    since, until = now - 3 * 3600 + 17.3, now - 12.7  # mid-minute edges
    got = doctor.findings(sqlite3.connect(path), since, until)
    exact = doctor.findings(sqlite3.connect(exact_path), since, until)

    def key(f: doctor.Finding) -> tuple:
        return (f.code, f.call_site)

    assert sorted(map(key, got)) == sorted(map(key, exact))
    long_holds = {f.call_site for f in got if f.code == "long-hold"}
    # p95 >= 1 s exactly: the site that holds 1000 ms is in, 999.99 ms is not.
    assert "app/edge.py:4 in e" in long_holds and "app/under.py:5 in u" not in long_holds
    assert {f.code for f in got} >= {"timeout", "hidden-waits", "long-hold"}
    by_key = {key(f): f for f in exact}
    for f in got:
        e = by_key[key(f)]
        assert f.impact_ms == pytest.approx(e.impact_ms)
        for name, value in e.figures.items():
            if name == "p95_hold_ms":  # estimated in its 1-2-5 bin
                assert rollup.bin_of(f.figures[name]) == rollup.bin_of(value)
                assert f.figures["p95_estimated"] and not e.figures["p95_estimated"]
                assert "≈ " in f.title and "≈" not in e.title
            elif name != "p95_estimated":
                assert f.figures[name] == pytest.approx(value), name
        if f.code == "hidden-waits":
            assert f.evidence == e.evidence  # the wait p95 stays exact
    # The window's edges matter: a minute less at each end changes the counts.
    inner = doctor.findings(sqlite3.connect(path), since + 60, until - 60)
    inner_exact = doctor.findings(sqlite3.connect(exact_path), since + 60, until - 60)
    assert [f.figures.get("transactions") for f in sorted(inner, key=key)] == [
        f.figures.get("transactions") for f in sorted(inner_exact, key=key)
    ]


def test_the_doctor_and_the_dashboard_agree_on_a_p95(tmp_path):
    # 36 holds: nearest rank takes the 35th; a rank rounded from 0.95 * (n - 1) took the 34th.
    now = time.time()
    site = "app/batch.py:7 in run"
    rows = [
        events.row(kind="transaction", ts=now - 300 + i, hold_ms=1000.0 + i,
                   duration_ms=1001.0 + i, call_site=site, lock_call_site=site, pid=1)
        for i in range(36)
    ]  # fmt: skip
    writer = store.Writer(tmp_path / "store.sqlite3")
    writer.write(rows, [], [])
    writer.close()
    conn = store.connect(tmp_path / "store.sqlite3", readonly=True)
    (hold,) = [f for f in doctor.findings(conn, now - 600, now) if f.code == "long-hold"]
    (cs,) = queries.call_sites(conn, now - 600, now)
    assert hold.figures["p95_hold_ms"] == cs.p95_hold_ms == 1034.0


def test_health_findings_come_from_the_processes_counters(tmp_path):
    w = store.Writer(tmp_path / "store.sqlite3")
    figures = dict.fromkeys(
        ("accepted", "dropped", "capture_errors", "store_errors", "lost", "live_errors",
         "live_missed"), 0
    )  # fmt: skip
    w.report(1, 1.0, "program:a", "exact", {**figures, "accepted": 10})
    conn = store.connect(tmp_path / "store.sqlite3", readonly=True)
    assert doctor.findings(conn) == []
    w.report(2, 2.0, "program:b", "inferred", {**figures, "dropped": 7, "lost": 3})
    found = {f.code: f for f in doctor.findings(conn)}
    assert set(found) == {"dropped", "lost", "inferred"}
    assert found["dropped"].title == "lockwatch dropped 7 events from a full buffer"
    assert found["lost"].title == "lockwatch could not store 3 events"
    assert "BUFFER_SIZE" in found["dropped"].change
    w.close()


def test_the_timeout_headline_follows_where_most_of_the_waiting_went(tmp_path):
    """6 timeouts behind another program and 1 behind an instrumented writer: the
    finding sends the user to the other program, not to the writer's line. (10 s apart:
    not retries of one statement.)"""
    now = time.time()
    path = tmp_path / "store.sqlite3"
    rows = [
        events.row(kind="busy", ts=now - 90 + 10 * i, classification="timeout", wait_ms=1000.0,
                   pid=2, call_site="app/w.py:9 in w", blocker_call_site=events.OUTSIDE,
                   blocker_context=events.OUTSIDE)
        for i in range(6)
    ]  # fmt: skip
    rows.append(
        events.row(kind="busy", ts=now - 30, classification="timeout", wait_ms=1000.0, pid=2,
                   call_site="app/w.py:9 in w", blocker_call_site="app/views.py:7 in v",
                   blocker_context="request:GET /v/")
    )  # fmt: skip
    writer = store.Writer(path)
    writer.write(rows, [], [])
    writer.close()
    got = {f.code: f for f in doctor.findings(sqlite3.connect(path), now - 120, now)}
    finding = got["timeout"]
    assert finding.title == "7 `timeout` busy errors, 6 of them behind another program"
    assert finding.call_site is None
    assert "another program" in finding.evidence


def test_rank_by_harm_name_the_endpoint_and_date_old_evidence(tmp_path):
    """Failed requests come before waits that succeeded, even waits that lost more time;
    the headline names the endpoint; evidence that stopped hours ago is dated and comes
    last, or is left out when newer evidence of its kind says something else."""
    now = time.time()
    old, create = now - 3 * 3600, "request:POST /create_user/"
    rows = []
    for i in range(36):  # 35 of 36 requests fail on an upgrade
        ts = now - 600 + i * 10
        rows.append(
            events.row(kind="request", ts=ts, context=create, method="POST",
                       path="/create_user/", status=500 if i else 200, busy_count=int(i > 0))
        )  # fmt: skip
        if i:
            rows.append(
                events.row(kind="busy", ts=ts, classification="upgrade", wait_ms=0.0, pid=i,
                           call_site="app/views.py:7 in create_user", context=create,
                           blocker_call_site="app/views.py:7 in create_user",
                           blocker_context=create)
            )  # fmt: skip
    for i in range(60):  # 60 s of waits that succeeded
        rows.append(
            events.row(kind="wait", ts=now - 900 + i, wait_ms=1000.0, outcome="acquired",
                       stmt_class="write", pid=100 + i, call_site="app/api.py:3 in put",
                       blocker_call_site="app/batch.py:9 in run", blocker_context="command:batch")
        )  # fmt: skip
    for i in range(50):  # before WAL: reads behind a committing writer, 3 hours ago
        rows.append(
            events.row(kind="wait", ts=old + i, wait_ms=2000.0, outcome="acquired",
                       stmt_class="read", pid=200 + i, call_site="app/report.py:3 in r",
                       blocker_call_site="app/views.py:7 in create_user",
                       blocker_context=create)
        )  # fmt: skip
    rows.append(  # an upgrade elsewhere, fixed since: the newer upgrades say something else
        events.row(kind="busy", ts=old, classification="upgrade", wait_ms=0.0, pid=300,
                   call_site="app/old.py:1 in o", blocker_call_site="app/views.py:7 in create_user",
                   blocker_context=create)
    )  # fmt: skip
    writer = store.Writer(tmp_path / "store.sqlite3")
    writer.write(rows, [], [])
    writer.close()
    conn = sqlite3.connect(tmp_path / "store.sqlite3")
    (first, *_) = doctor.findings(conn, now - 3600, now)
    assert first.title == (
        "POST /create_user/: 35 of 36 requests failed with `upgrade` at "
        "`app/views.py:7 in create_user`"
    )
    # Over more than an hour of events, the endpoint's requests are not counted (reading
    # them all would cost more than the rest of the doctor): its busy errors are.
    found = doctor.findings(conn, now - 4 * 3600, now)
    assert [f.code for f in found] == ["upgrade", "hidden-waits", "wal"]
    assert found[0].title == (
        "35 `upgrade` busy errors at `app/views.py:7 in create_user` in POST /create_user/"
    )
    assert found[1].impact_ms > found[0].impact_ms  # more time, but nothing failed
    when = datetime.fromtimestamp(old + 49, UTC).strftime("%Y-%m-%d %H:%M UTC")
    assert found[2].title == (
        f"WAL would remove 50 waits (100.0 s in total) under the rollback journal "
        f"(last seen {when}, not since)"
    )


def test_the_synchronous_advice_says_what_normal_risks(tmp_path):
    path = tmp_path / "checked.sqlite3"
    sqlite3.connect(path).execute("PRAGMA journal_mode=wal").connection.close()
    databases = {"default": {**DB, "NAME": str(path), "OPTIONS": {"transaction_mode": "IMMEDIATE"}}}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Overriding setting DATABASES")
        with override_settings(DATABASES=databases):
            found = checks.run_checks(tags=["lockwatch"], include_deployment_checks=True)
    (info,) = [m for m in found if m.id == "lockwatch.I015"]
    assert "a power loss or an operating-system crash can lose the last commits" in info.msg
    assert "an application crash loses nothing" in info.msg


def test_counts_read_naturally(tmp_path):
    """'1 transaction', not '1 transactions'; '1 event', '2 events'."""
    now = time.time()
    site = "app/batch.py:7 in run"
    rows = [
        events.row(kind="transaction", ts=now - 60, hold_ms=1500.0, duration_ms=1501.0,
                   call_site=site, lock_call_site=site, pid=1)
    ]  # fmt: skip
    writer = store.Writer(tmp_path / "store.sqlite3")
    writer.write(rows, [], [])
    figures = dict.fromkeys(
        ("accepted", "dropped", "capture_errors", "store_errors", "lost", "live_errors",
         "live_missed"), 0
    )  # fmt: skip
    writer.report(2, 2.0, "program:b", "exact", {**figures, "dropped": 1, "lost": 2})
    writer.close()
    found = {f.code: f for f in doctor.findings(sqlite3.connect(tmp_path / "store.sqlite3"))}
    assert found["long-hold"].evidence == "1 transaction held it 1.5 s in total"
    assert found["dropped"].title == "lockwatch dropped 1 event from a full buffer"
    assert found["lost"].title == "lockwatch could not store 2 events"
