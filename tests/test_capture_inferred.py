"""Where the SQLite handle cannot be verified: inferred from timings, and said so."""

from __future__ import annotations

import threading
import time

import pytest
from django.core import checks
from django.db import OperationalError, transaction

from lockwatch.capture import busyhandler
from tests.conftest import run_threads
from tests.project.shop.models import Item
from tests.scenarios import hold_then_write


@pytest.fixture
def no_handle(monkeypatch):
    monkeypatch.setattr(busyhandler, "raw_handle", lambda conn: None)


def test_timeout_is_inferred_and_flagged(lw, watched, no_handle):
    errors = hold_then_write(watched(timeout=0.3), 0.8)
    assert isinstance(errors[1], OperationalError)
    lw.settle()
    (busy,) = lw.events(kind="busy")
    assert busy["capture_mode"] == "inferred"
    assert busy["classification"] == "timeout"
    # SQLite's own handler gives up after the timeout, never before.
    assert busy["duration_ms"] >= 300 * 0.95
    assert busy["blocker_call_site"] is not None and busy["blocker_call_site"] != "unknown"
    assert {r["capture_mode"] for r in lw.rows()} == {"inferred"}
    (mode,) = lw.rows("SELECT capture_mode FROM processes")
    assert mode["capture_mode"] == "inferred"


def test_upgrade_is_inferred(lw, watched, no_handle):
    db = watched()
    both_read = threading.Barrier(2)
    a_wrote = threading.Event()

    def a():
        with transaction.atomic(using=db):
            Item.objects.using(db).count()
            both_read.wait(5)
            Item.objects.using(db).create(name="a")
            a_wrote.set()
            time.sleep(0.2)

    def b():
        with transaction.atomic(using=db):
            Item.objects.using(db).count()
            both_read.wait(5)
            a_wrote.wait(5)
            Item.objects.using(db).create(name="b")

    errors = run_threads(a, b)
    assert isinstance(errors[1], OperationalError)
    (busy,) = lw.events(kind="busy")
    assert busy["classification"] == "upgrade"
    assert busy["capture_mode"] == "inferred"


def test_system_check_says_waits_are_inferred(monkeypatch):
    monkeypatch.setattr(busyhandler, "api", lambda: None)
    monkeypatch.setattr(busyhandler, "unavailable_reason", lambda: "statically linked SQLite")
    found = [m for m in checks.run_checks(tags=["lockwatch"]) if m.id == "lockwatch.W001"]
    assert len(found) == 1
    assert "statically linked SQLite" in found[0].hint
