"""One event and what it links to: the event page's chain of blockers (who held the
lock, and who held it before that holder got it) and the waits a hold caused.

Read-only queries over the store, like ``queries``, whose column list and hold clauses
they share.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from lockwatch import events
from lockwatch.events import HOLD, IN_WINDOW
from lockwatch.live import payload

from .queries import COLS, HOLD_START

MAX_ID = 2**63 - 1  # SQLite's largest rowid; a bigger int cannot even be bound


def event(conn: sqlite3.Connection, event_id: int) -> dict[str, Any] | None:
    if not 0 <= event_id <= MAX_ID:
        return None
    row = conn.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
    return dict(row) if row else None


def _hold_of(
    conn: sqlite3.Connection, pid: int, thread: str | None, start: float, end: float
) -> dict[str, Any] | None:
    """The hold event (transaction or autocommit write) of pid/thread overlapping [start, end]."""
    row = conn.execute(
        f"SELECT *, {HOLD_START} AS start FROM events WHERE {HOLD} AND pid = ?"
        f" AND (thread = ? OR ? IS NULL) AND {IN_WINDOW}"
        f" AND {HOLD_START} <= ? AND {HOLD_START} + hold_ms / 1000.0 >= ?"
        " ORDER BY hold_ms DESC LIMIT 1",
        # A hold that overlaps the wait began at most a day before it.
        (pid, thread, thread, start - 86400, end, end, start),
    ).fetchone()
    return dict(row) if row else None


def blocker_chain(
    conn: sqlite3.Connection, ev: dict[str, Any], depth: int = 6
) -> list[dict[str, Any]]:
    """Who blocked this wait, who blocked that holder while it took the lock, and so on.

    Each link is a dict with the blocker's pid, thread, call site and context,
    and ``event`` (its transaction or write, when it has been stored) or
    ``hold`` (an open hold from the holds table).
    """
    chain: list[dict[str, Any]] = []
    seen: set[int] = {ev["id"]}
    current = ev
    # Another program (outside) or readers have no transaction in the store to follow.
    while (
        len(chain) < depth
        and current.get("blocker_pid")
        and current.get("blocker_context") not in (events.OUTSIDE, events.READERS, events.WAL_READ)
    ):
        start = current["ts"]
        end = start + (current.get("duration_ms") or current.get("wait_ms") or 0) / 1000.0
        link: dict[str, Any] = {
            "pid": current["blocker_pid"],
            "thread": current.get("blocker_thread"),
            "call_site": current.get("blocker_call_site"),
            "context": current.get("blocker_context"),
            "held_ms": current.get("blocker_held_ms"),
            "event": None,
        }
        holder = _hold_of(conn, current["blocker_pid"], current.get("blocker_thread"), start, end)
        link["event"] = holder
        chain.append(link)
        if holder is None or holder["id"] in seen:
            break
        seen.add(holder["id"])
        # Did the holder itself wait for the lock before it got it?
        waited = conn.execute(
            "SELECT * FROM events WHERE kind IN ('wait', 'busy') AND pid = ? AND thread IS ?"
            f" AND {IN_WINDOW} AND blocker_pid IS NOT NULL ORDER BY wait_ms DESC LIMIT 1",
            (holder["pid"], holder["thread"], holder["ts"], holder["start"]),
        ).fetchone()
        if waited is None or waited["id"] in seen:
            break
        seen.add(waited["id"])
        current = dict(waited)
    return chain


def caused(conn: sqlite3.Connection, ev: dict[str, Any], limit: int = 50) -> list[dict[str, Any]]:
    """Waits and busy errors this hold caused, for a transaction's detail page."""
    if ev.get("hold_ms") is None or ev["kind"] not in ("transaction", "query"):
        return []
    start = ev.get("lock_ts") or ev["ts"] + (ev.get("wait_ms") or 0) / 1000.0
    end = start + ev["hold_ms"] / 1000.0
    rows = conn.execute(
        f"SELECT {COLS} FROM events WHERE kind IN ('wait', 'busy') AND {IN_WINDOW}"
        " AND blocker_pid = ? AND blocker_thread IS ? ORDER BY ts LIMIT ?",
        (start - 3600, end, ev["pid"], ev["thread"], limit),
    )
    return [payload(r) for r in rows]
