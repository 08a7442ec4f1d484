"""Who holds each write lock right now, who waits behind it, and the holds still open.

Read from the live holder table beside the store (``lockwatch.holders``), so the page
is right within a second, before anything is flushed; the store's open holds (rows of
``holds`` without an end) fill in for holders the table does not show.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from lockwatch import holders, holderview

log = logging.getLogger("lockwatch.dashboard")

# The strip names this many waiters per database; the rest are counted.
WAITERS_SHOWN = 8


# The databases of the newest events, for one the holds table does not name.
_RECENT_DBS = "SELECT DISTINCT db FROM (SELECT db FROM events ORDER BY id DESC LIMIT 500)"


def _names(conn: sqlite3.Connection | None, keys: set[int]) -> dict[int, str]:
    """Database paths by their key in the holder table (the table keeps only the key):
    from the store's holds, else its newest events."""
    names: dict[int, str] = {}
    if conn is None:
        return names
    for (db,) in conn.execute("SELECT DISTINCT db FROM holds WHERE db IS NOT NULL"):
        names[holders.db_key(db)] = db
    if not keys <= names.keys():
        for (db,) in conn.execute(_RECENT_DBS):
            if db:
                names.setdefault(holders.db_key(db), db)
    return names


def _who(h: holders.Holder) -> dict[str, Any]:
    return {"pid": h.pid, "thread": h.thread, "context": h.context, "call_site": h.call_site,
            "sql": h.sql}  # fmt: skip


def held_now(conn: sqlite3.Connection | None, store: Path) -> list[dict[str, Any]]:
    """Per database: who holds its write lock now (if anyone lockwatch watches does), for
    how long, and who waits behind it with their waits so far (the longest first).

    A database that has waiters but no holder in the table is listed too: its lock is
    held by something lockwatch does not watch (another program, a raw connection).
    """
    try:
        held = holderview.held_now(store)
        waiting = holderview.waiting_now(store)
    except Exception:  # the header must render whatever the table holds
        log.exception("lockwatch: cannot read the holder table")
        return []
    if not held and not waiting:
        return []
    names = _names(conn, {x.db_key for x in held} | {w.db_key for w in waiting})
    behind: dict[int, list[dict[str, Any]]] = {}
    for w in waiting:
        behind.setdefault(w.db_key, []).append({**_who(w.waiter), "seconds": w.waited})
    out: list[dict[str, Any]] = []
    for x in held:
        waiters = behind.pop(x.db_key, [])
        out.append({
            "db": names.get(x.db_key, "a watched database"), **_who(x.holder),
            "state": x.state, "seconds": x.age, "abandoned": x.abandoned,
            "since_ms": round(x.holder.since * 1000),
            "waiters": waiters[:WAITERS_SHOWN], "more": max(len(waiters) - WAITERS_SHOWN, 0),
        })  # fmt: skip
    for key, waiters in behind.items():
        out.append({
            "db": names.get(key, "a watched database"), "pid": None, "seconds": 0.0,
            "waiters": waiters[:WAITERS_SHOWN], "more": max(len(waiters) - WAITERS_SHOWN, 0),
        })  # fmt: skip
    return out


def open_holds(
    conn: sqlite3.Connection, store: Path, now: float | None = None
) -> list[dict[str, Any]]:
    """Holds still going, as the timeline's hold rows (``open`` set, ``hold_ms`` so far).

    From the holder table, and the store's holds without an end whose process is alive
    (one per connection: the table's when both have it). A dead process's open hold is
    not drawn: SQLite let go of its lock when it died.
    """
    now = time.time() if now is None else now
    seen: set[tuple[int, int]] = set()
    out: list[dict[str, Any]] = []
    try:
        live = holderview.held_now(store)
    except Exception:
        log.exception("lockwatch: cannot read the holder table")
        live = []
    for x in live:
        h = x.holder
        if x.abandoned or (h.pid, h.conn_id) in seen:
            continue
        seen.add((h.pid, h.conn_id))
        out.append(_row(h.pid, h.thread, h.context, h.call_site, h.sql, h.since, now))
    for r in conn.execute(
        "SELECT pid, conn_id, thread, context, call_site, sql, lock_ts FROM holds"
        " WHERE end_ts IS NULL ORDER BY lock_ts LIMIT 100"
    ):
        if (r["pid"], r["conn_id"]) in seen or not r["pid"] or not holders.alive(r["pid"]):
            continue
        seen.add((r["pid"], r["conn_id"]))
        out.append(_row(r["pid"], r["thread"], r["context"], r["call_site"], r["sql"],
                        r["lock_ts"], now))  # fmt: skip
    return out


def _row(
    pid: int, thread: str | None, context: str | None, site: str | None, sql: str | None,
    start: float, now: float,
) -> dict[str, Any]:  # fmt: skip
    return {
        "id": None, "kind": "transaction", "open": True, "pid": pid, "thread": thread or "?",
        "context": context or "", "site": site or "", "call_site": site or "",
        "sql": sql or "", "lock_statement": sql or "", "start": start,
        "hold_ms": max(now - start, 0.0) * 1000.0,
    }  # fmt: skip
