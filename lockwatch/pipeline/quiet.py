"""Quiet writes, folded: the flusher's count of what capture did not keep as events.

Capture hands over a ``records.Quiet`` for each autocommit write or transaction that
did not wait, did not fail, made nobody wait and held the lock under
``HOLD_RECORD_MS``. The flusher folds a batch's into one ``rollup.QuietRow`` per
second, database, process, series, call site and bin (count, total and longest), and
the store writes them with the batch's events and into the rollup, in one
transaction: hold histograms, the call-sites table and the doctor count every write.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from lockwatch.capture import callsite
from lockwatch.capture.records import Quiet
from lockwatch.store.rollup import DURATION, EDGES, TXN, WRITE, QuietRow

# (second, db, pid, series, raw site, bin) -> [n, total ms, max ms, first ts, last ts]
_Key = tuple[int, str, int, str, Any, int]


class Folder:
    """One batch's quiet records, folded."""

    def __init__(self) -> None:
        self.cells: dict[_Key, list[Any]] = {}
        self.records = 0

    def add(self, rec: Quiet) -> None:
        self.records += 1
        wall = rec.wall
        o = rec.origin
        second = int(wall)
        if rec.hold is not None:
            ms = round(rec.hold * 1000.0, 3)  # as an event row rounds it
            series = TXN if rec.key is not None else WRITE
            self._put((second, o.db, o.pid, series, rec.site, bisect_right(EDGES, ms)), ms, wall)
        if rec.dur is not None:
            ms = round(rec.dur * 1000.0, 3)
            self._put((second, o.db, o.pid, DURATION, None, bisect_right(EDGES, ms)), ms, wall)

    def _put(self, key: _Key, ms: float, wall: float) -> None:
        cell = self.cells.get(key)
        if cell is None:
            self.cells[key] = [1, ms, ms, wall, wall]
            return
        cell[0] += 1
        cell[1] += ms
        if ms > cell[2]:
            cell[2] = ms
        if wall < cell[3]:
            cell[3] = wall
        elif wall > cell[4]:
            cell[4] = wall

    def rows(self) -> list[QuietRow]:
        """The batch's rows; call sites are formatted here, once per row."""
        out = []
        for (_s, db, pid, series, site, b), (n, total, top, first, last) in self.cells.items():
            text = "" if series == DURATION else (callsite.format(site) or "")
            out.append(QuietRow(first, last, db, pid, series, text, b, n, total, top))
        return out
