"""The capture fast paths (issue 18) record exactly what the general path does.

A quick BEGIN, a transaction's first write, an autocommit write (with or without
RETURNING) and a quick COMMIT skip ``Probe._after``. Each scenario runs twice on
fresh databases, once with the fast paths off (``fast_reads`` False sends every
statement through ``_after``), and the records must be the same, field by field,
times and transaction keys aside.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connections, transaction

from lockwatch import pipeline
from lockwatch.capture import probe as probe_module
from lockwatch.capture import rawsqlite
from lockwatch.capture.probe import Probe
from tests.conftest import lw_settings
from tests.project.shop.models import Item

_KEY = re.compile(r"^\d+:\d+:\d+$")


def _shape(value: Any) -> Any:
    """A record with its times and transaction keys blanked (they differ run to run)."""
    if isinstance(value, float):
        return "time"
    if isinstance(value, str) and _KEY.match(value):
        return "key"
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        fields = [
            (n, _shape(v)) for n, v in zip(value._fields, value, strict=True) if n != "origin"
        ]
        return (type(value).__name__, *fields)
    if isinstance(value, tuple):
        return tuple(_shape(v) for v in value)
    return value


def _first_difference(fast: list[Any], slow: list[Any]) -> str:
    for i, (a, b) in enumerate(zip(fast, slow, strict=False)):
        if a != b:
            pairs = zip(a[1:], b[1:], strict=True)
            fields = [f"{x[0]}: fast {x[1]!r}, general {y[1]!r}" for x, y in pairs if x != y]
            return f"record {i} ({a[0]} / {b[0]}): " + "; ".join(fields)
    return f"{len(fast)} records on the fast path, {len(slow)} on the general one"


def _django_scenario(db: str) -> None:
    Item.objects.using(db).create(name="a")  # INSERT ... RETURNING, fetched
    Item.objects.using(db).filter(name="a").update(qty=2)  # autocommit write
    with transaction.atomic(using=db):  # BEGIN, first write, a second, COMMIT
        Item.objects.using(db).create(name="b")
        Item.objects.using(db).filter(name="b").update(qty=3)
    with transaction.atomic(using=db):  # a read before the first write
        list(Item.objects.using(db).filter(name="a"))
        Item.objects.using(db).filter(name="a").delete()
    try:
        with transaction.atomic(using=db):  # ends in a rollback
            Item.objects.using(db).create(name="c")
            raise KeyError("roll back")
    except KeyError:
        pass


def _raw_scenario(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")  # autocommit DDL
    conn.execute("INSERT INTO t (v) VALUES ('x')")
    rows = conn.execute("INSERT INTO t (v) VALUES ('y') RETURNING id").fetchall()
    assert rows
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM t").fetchone()
    conn.execute("UPDATE t SET v = 'z'")
    conn.execute("COMMIT")
    conn.execute("BEGIN IMMEDIATE")  # takes the lock at BEGIN: marked, not the fast BEGIN
    conn.execute("DELETE FROM t WHERE v = 'nothing'")
    conn.commit()
    conn.execute("SAVEPOINT s")  # begins a transaction without BEGIN
    conn.execute("INSERT INTO t (v) VALUES ('s')")
    conn.execute("RELEASE s")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t (v) VALUES ('r')")
    conn.rollback()


def _recorded(
    monkeypatch: pytest.MonkeyPatch, probe: Probe, fast: bool, run: Callable[[], None]
) -> tuple[list[Any], int]:
    """The records ``run`` emits, and how many statements went through ``_after``."""
    records: list[Any] = []
    general = [0]
    classify = probe_module.statement_class

    def counted(sql: str) -> str:
        # _after's first step; counted here, not by wrapping _after, which would put
        # this file's frame in every call site found inside it.
        general[0] += 1
        return classify(sql)

    probe.fast_reads = fast
    start = time.time()
    with monkeypatch.context() as m:
        m.setattr(pipeline, "emit", records.append)
        m.setattr(probe_module, "statement_class", counted)
        run()
    end = time.time()
    for r in records:  # the times blanked below, checked against the clock instead
        for name in ("wall", "lock_wall"):
            at = getattr(r, name, None)
            assert at is None or start <= at <= end, (name, r)
        for name in ("dur", "hold"):
            seconds = getattr(r, name, None)
            # A hold is never 0: the lock was taken before the statement ended.
            assert seconds is None or 0 < seconds <= end - start, (name, r)
    return [_shape(r) for r in records], general[0]


@pytest.mark.parametrize("hold_ms", [60_000, 0], ids=["quiet", "every-write-stored"])
def test_django_statements_record_the_same_on_the_fast_path(lw, watched, monkeypatch, hold_ms):
    lw_settings(lw, HOLD_RECORD_MS=hold_ms)
    seen = []
    for fast in (False, True, False):  # the middle run finds every statement classified
        db = watched()
        connections[db].ensure_connection()
        probe = connections[db]._lockwatch
        assert probe is not None
        seen.append(_recorded(monkeypatch, probe, fast, functools.partial(_django_scenario, db)))
    (slow, slow_after), (fast, fast_after), (again, _) = seen
    assert slow == again  # the scenario itself records the same each time
    assert fast == slow, _first_difference(fast, slow)
    assert {r[0] for r in slow} >= {"Lock", "Transaction" if hold_ms == 0 else "Quiet"}
    assert slow_after >= 12
    if hold_ms:
        # Quiet: none of them went the general way (the rollback's ROLLBACK aside).
        assert fast_after <= 1, fast_after


@pytest.mark.parametrize("hold_ms", [60_000, 0], ids=["quiet", "every-write-stored"])
def test_raw_sqlite3_statements_record_the_same_on_the_fast_path(
    lw, tmp_path: Path, monkeypatch, hold_ms
):
    lw_settings(lw, HOLD_RECORD_MS=hold_ms)
    rawsqlite.instrument_sqlite3()
    lw.cleanups.append(rawsqlite.uninstrument_sqlite3)
    seen = []
    for n, fast in enumerate((False, True)):
        conn = sqlite3.connect(tmp_path / f"raw{n}.sqlite3", isolation_level=None)
        probe = conn._lockwatch  # type: ignore[attr-defined]
        assert probe is not None
        seen.append(_recorded(monkeypatch, probe, fast, functools.partial(_raw_scenario, conn)))
        conn.close()
    (slow, slow_after), (fast, fast_after) = seen
    assert fast == slow, _first_difference(fast, slow)
    kinds = [r[0] for r in slow]
    assert kinds.count("Lock") == 4  # the UPDATE, BEGIN IMMEDIATE, and two INSERTs
    assert fast_after < slow_after
