"""Real SQLite files, real threads, real locks: what capture records."""

from __future__ import annotations

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
    assert busy["wait_ms"] == pytest.approx(500, rel=0.15)
    assert busy["call_site"] == site("WAITER-WRITE", "waiter")
    assert busy["blocker_call_site"] == site("HOLDER-WRITE", "holder")
    assert busy["blocker_thread"] == "t0"
    assert busy["thread"] == "t1"
    assert busy["context"].startswith("test:tests/test_capture_locks.py::test_timeout")
    assert busy["blocker_context"] == busy["context"]
    assert busy["capture_mode"] == "exact"
    (wait,) = lw.events(kind="wait")
    assert wait["outcome"] == "gave_up"
    assert wait["wait_ms"] == pytest.approx(500, rel=0.15)
    (txn,) = [t for t in lw.events(kind="transaction") if t["thread"] == "t0"]
    assert txn["end"] == "commit"
    assert txn["hold_ms"] == pytest.approx(1500, rel=0.15)
    assert txn["lock_call_site"] == site("HOLDER-WRITE", "holder")
    assert txn["begin_mode"] == "deferred"

