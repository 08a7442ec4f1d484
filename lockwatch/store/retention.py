"""Retention: the oldest events, quiet writes and closed holds past the store's limits
(``RETENTION_MAX_AGE``, ``RETENTION_MAX_ROWS``) are deleted, and their share taken
out of the rollup in the same transaction, so the rollup always sums what is kept.

Each transaction deletes at most ``chunk`` rows, so no write lock is held for long.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from lockwatch.store import rollup
from lockwatch.store.schema import immediate as _immediate

_PRUNED_COLUMNS = "id, kind, ts, hold_ms, duration_ms, lock_call_site, call_site"
# Two subqueries: SQLite reads a lone min() or max() from the index's end, but scans the
# whole table for both in one SELECT.
_SPAN = "SELECT (SELECT min(id) FROM {0}), (SELECT max(id) FROM {0})"


class Pruner:
    def __init__(self, conn: sqlite3.Connection, chunk: int) -> None:
        self.conn = conn
        self.chunk = chunk

    def prune(self, max_age: float | None, max_rows: int | None, batch: int = 5000) -> int:
        """Delete the oldest events past the limits: at most ``batch`` for each limit
        per call, ``PRUNE_CHUNK`` per transaction, so no write lock is held for long.

        ``max_rows`` keeps the newest ``max_rows`` ids (a lost row leaves a gap, so
        the store never holds more). Closed holds older than every kept event go too.
        """
        removed = 0
        if max_age is not None:
            cutoff = time.time() - max_age
            removed += self._prune(self._by_age, cutoff, batch)
        if max_rows is not None:
            removed += self._prune(self._by_rows, max_rows, batch)
        if removed:
            (oldest,) = self.conn.execute("SELECT min(ts) FROM events").fetchone()
            before = time.time() if oldest is None else oldest
            self._prune_holds(before, batch)
            self._prune(self._quiet_before, before, batch)
        elif max_age is not None:
            self._prune_holds(time.time() - max_age, batch)
            self._prune(self._quiet_before, time.time() - max_age, batch)
        if max_rows is not None:  # quiet rows count against the limit on their own too
            self._prune(self._quiet_rows, max_rows, batch)
        return removed

    def _prune(self, chunk: Callable[[Any, int], int], limit: Any, batch: int) -> int:
        removed = 0
        while removed < batch:
            n = chunk(limit, min(self.chunk, batch - removed))
            if not n:
                break
            removed += n
        return removed

    def _by_rows(self, max_rows: int, most: int) -> int:
        conn = self.conn
        lo, hi = conn.execute(_SPAN.format("events")).fetchone()
        if lo is None or hi - lo + 1 <= max_rows:
            return 0  # read without the lock: the usual answer, at no cost to writers
        with _immediate(conn):
            # Again under the lock: another process may have pruned meanwhile.
            lo, hi = conn.execute(_SPAN.format("events")).fetchone()
            if lo is None or hi - lo + 1 <= max_rows:
                return 0
            cut = lo + min(hi - lo + 1 - max_rows, most)
            rows = conn.execute(
                f"SELECT {_PRUNED_COLUMNS} FROM events WHERE id < ?", (cut,)
            ).fetchall()
            # The rows themselves, so the rollup loses exactly what the events lose.
            rollup.apply(conn, rows, sign=-1)
            conn.execute("DELETE FROM events WHERE id < ?", (cut,))
        return len(rows)

    def _by_age(self, cutoff: float, most: int) -> int:
        conn = self.conn
        (oldest,) = conn.execute("SELECT min(ts) FROM events").fetchone()
        if oldest is None or oldest >= cutoff:
            return 0
        with _immediate(conn):
            rows = conn.execute(
                f"SELECT {_PRUNED_COLUMNS} FROM events WHERE ts < ? ORDER BY ts LIMIT ?",
                (cutoff, most),
            ).fetchall()
            rollup.apply(conn, rows, sign=-1)
            conn.executemany("DELETE FROM events WHERE id = ?", [(r[0],) for r in rows])
        return len(rows)

    def _quiet_before(self, before: float, most: int) -> int:
        """Quiet rows older than ``before`` (the oldest event kept, or the age limit)."""
        conn = self.conn
        if not rollup.quiet_available(conn):
            return 0
        (oldest,) = conn.execute("SELECT min(ts) FROM quiet").fetchone()
        if oldest is None or oldest >= before:
            return 0
        with _immediate(conn):
            rows = conn.execute(
                f"{rollup.QUIET_SELECT} WHERE ts < ? ORDER BY ts LIMIT ?", (before, most)
            ).fetchall()
            return self._drop_quiet(rows)

    def _quiet_rows(self, max_rows: int, most: int) -> int:
        conn = self.conn
        if not rollup.quiet_available(conn):
            return 0
        span = _SPAN.format("quiet")
        lo, hi = conn.execute(span).fetchone()
        if lo is None or hi - lo + 1 <= max_rows:
            return 0
        with _immediate(conn):
            lo, hi = conn.execute(span).fetchone()
            if lo is None or hi - lo + 1 <= max_rows:
                return 0
            cut = (lo + min(hi - lo + 1 - max_rows, most),)
            rows = conn.execute(f"{rollup.QUIET_SELECT} WHERE id < ?", cut).fetchall()
            return self._drop_quiet(rows)

    def _drop_quiet(self, rows: list[Any]) -> int:
        """Delete quiet rows (id first; inside the caller's transaction) and their
        rollup share."""
        rollup.apply(self.conn, (), sign=-1, quiet=[rollup.QuietRow(*r[1:]) for r in rows])
        self.conn.executemany("DELETE FROM quiet WHERE id = ?", [(r[0],) for r in rows])
        return len(rows)

    def _prune_holds(self, before: float, batch: int) -> None:
        """Closed holds that ended before ``before``, by the (db, lock_ts) index."""
        conn = self.conn
        dbs: list[str] = []
        db = conn.execute("SELECT min(db) FROM holds").fetchone()[0]
        while db is not None and len(dbs) < 1000:  # one index probe per database
            dbs.append(db)
            db = conn.execute("SELECT min(db) FROM holds WHERE db > ?", (db,)).fetchone()[0]
        due = "FROM holds WHERE db = ? AND lock_ts < ? AND end_ts < ?"
        for db in dbs:
            left = batch
            # Looked for first without the lock: most calls find nothing to do.
            while (
                left > 0
                and conn.execute(f"SELECT 1 {due} LIMIT 1", (db, before, before)).fetchone()
            ):
                most = min(self.chunk, left)
                with _immediate(conn):
                    n = conn.execute(
                        f"DELETE FROM holds WHERE rowid IN (SELECT rowid {due} LIMIT ?)",
                        (db, before, before, most),
                    ).rowcount
                if n < most:
                    break
                left -= n
