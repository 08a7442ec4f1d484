"""The doctor: each piece of advice comes from a real scenario's evidence."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
import warnings

import pytest
from django.core import checks
from django.db import OperationalError, transaction
from django.test import override_settings

from lockwatch import doctor
from tests.conftest import ROOT, line_of, run_threads
from tests.project.shop.models import Item
from tests.scenarios import commit_behind_reader, hold_then_write

SCENARIOS = ROOT / "tests" / "scenarios.py"


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
    assert f.title.startswith("1 `upgrade` busy errors at `tests/test_doctor.py:")
    assert "in read_then_write" in f.title
    assert '"transaction_mode": "IMMEDIATE"' in f.change


def test_timeouts_name_the_blocker_and_its_p95_hold(lw, watched):
    db = watched(journal="wal", timeout=0.3)
    errors = hold_then_write(db, 1.2)
    assert isinstance(errors[1], OperationalError)
    found = _findings(lw)
    f = found["timeout"]
    hold = line_of(SCENARIOS, "SCENARIO-HOLD")
    assert (
        f"1 `timeout` busy errors, 1 of them blocked by `tests/scenarios.py:{hold} in holder`"
        in (f.title)
    )
    assert f.figures["p95_hold_ms"] == pytest.approx(1200, rel=0.15)
    assert "move the slow work" in f.change
    assert "long-hold" not in found  # the same call site is not reported twice


def test_commit_waiting_for_readers_advises_wal(lw, watched):
    assert commit_behind_reader(watched(), 0.4) == [None, None]
    f = _findings(lw)["commit-readers"]
    assert f.title.startswith("COMMIT waited on readers for ")
    assert "enable WAL" in f.change
    assert 200 < f.figures["waited_ms"] < 460


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
    assert done.stdout.startswith("1. 1 `timeout` busy errors, 1 of them blocked by")


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
            return {m.id for m in checks.run_checks(tags=["lockwatch"])}


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


def test_unwritable_store_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with override_settings(LOCKWATCH={"STORE": str(blocker / "store.sqlite3")}):
        ids = {m.id for m in checks.run_checks(tags=["lockwatch"])}
    assert "lockwatch.E005" in ids
