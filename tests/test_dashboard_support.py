"""Helpers for the dashboard tests: a store filled with a small, known story.

The story: pid 100's MainThread holds the write lock for 800 ms (HOLDER);
pid 200 waits 300 ms and gets a busy timeout, blamed on HOLDER; a second wait
in pid 200 succeeds after 50 ms. Plus a few autocommit writes and reads.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from lockwatch import events, store

HOLDER = "shop/views.py:42 in checkout"
WAITER = "shop/tasks.py:7 in sync_stock"
WAITER_CONTEXT = "command:sync_stock"
HOLDER_CONTEXT = "request:POST /checkout/"
TOKEN = "test-token-0123456789"


def insert(path: Path, rows: list[dict[str, Any]]) -> list[int]:
    """Write event rows as the flusher would (through the store's own writer)."""
    w = store.Writer(path)
    try:
        w.write([events.row(**r) for r in rows], [], [])
        n = len(rows)
        return [
            r[0] for r in w.conn.execute("SELECT id FROM events ORDER BY id DESC LIMIT ?", (n,))
        ][::-1]
    finally:
        w.close()


def attribute(path: Path, event_id: int, site: str = HOLDER, pid: int = 100) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "UPDATE events SET blocker_pid = ?, blocker_call_site = ?, blocker_context = ?,"
            " blocker_thread = 'MainThread', blocker_held_ms = 400 WHERE id = ?",
            (pid, site, HOLDER_CONTEXT, event_id),
        )
    conn.close()


def story(path: Path, now: float | None = None) -> dict[str, int]:
    """Fill a store with the story; return the ids by name."""
    now = time.time() if now is None else now
    t0 = now - 30
    base = {"db": "/srv/app/db.sqlite3", "capture_mode": "exact", "conn_id": 1}
    holder = {"pid": 100, "thread": "MainThread", "context": HOLDER_CONTEXT, **base}
    waiter = {"pid": 200, "thread": "MainThread", "context": WAITER_CONTEXT, **base}
    rows = [
        dict(ts=t0, kind="transaction", duration_ms=820.0, hold_ms=800.0, call_site=HOLDER,
             lock_call_site=HOLDER, lock_ts=t0 + 0.01, lock_sql='INSERT INTO "shop_order"',
             sql="BEGIN", begin_mode="deferred", end="commit", statements=3, **holder),
        dict(ts=t0 + 0.1, kind="wait", duration_ms=300.0, wait_ms=300.0, outcome="gave_up",
             call_site=WAITER, sql='UPDATE "shop_item" SET stock = ?', **waiter),
        dict(ts=t0 + 0.1, kind="busy", classification="timeout", duration_ms=300.0,
             wait_ms=300.0, call_site=WAITER, sql='UPDATE "shop_item" SET stock = ?',
             error_name="SQLITE_BUSY", message="database is locked", **waiter),
        dict(ts=t0 + 0.5, kind="wait", duration_ms=50.0, wait_ms=50.0, outcome="acquired",
             call_site=WAITER, sql='UPDATE "shop_item" SET stock = ?', **waiter),
        dict(ts=t0 + 1.0, kind="query", duration_ms=3.0, hold_ms=2.5, wait_ms=0.0,
             call_site=WAITER, sql='UPDATE "shop_item" SET stock = ?', stmt_class="write",
             **waiter),
        dict(ts=t0 + 2.0, kind="query", duration_ms=0.4, call_site="shop/views.py:10 in home",
             sql='SELECT "shop_item"."id" FROM "shop_item"', stmt_class="read", **holder),
        dict(ts=t0 + 2.5, kind="request", duration_ms=12.0, method="GET", path="/",
             status=200, queries=1, request_id="story-request", **holder),
    ]  # fmt: skip
    ids = insert(path, rows)
    names = ["holder", "wait", "busy", "wait_ok", "autocommit", "read", "request"]
    out = dict(zip(names, ids, strict=True))
    for name in ("wait", "busy", "wait_ok"):
        attribute(path, out[name])
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO processes (pid, started, program, capture_mode, accepted, dropped,"
            " capture_errors, store_errors, lost, live_errors, live_missed, updated)"
            " VALUES (100, ?, 'runserver', 'exact', 10, 3, 0, 0, 0, 0, 0, ?),"
            " (200, ?, 'command:sync_stock', 'exact', 5, 4, 0, 0, 0, 0, 0, ?)",
            (t0, now, t0, now),
        )
    conn.close()
    return out


def test_story_fills_every_kind(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    ids = story(path)
    conn = store.connect(path, readonly=True)
    kinds = {r[0] for r in conn.execute("SELECT kind FROM events")}
    assert kinds == set(events.KINDS)
    busy = conn.execute("SELECT * FROM events WHERE id = ?", (ids["busy"],)).fetchone()
    assert busy["blocker_call_site"] == HOLDER
