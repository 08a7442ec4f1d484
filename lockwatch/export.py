"""CSV export: one row per event, the fixed header first, streamed from the store."""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

from . import events
from .filters import Filters
from .store import iter_events

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _formula_like(value: str) -> bool:
    # Quotes are looked through, so a value that already starts with our
    # escape quote is escaped again and unescapes to itself.
    return value.lstrip("'").startswith(_FORMULA_START)


def safe_cell(value: str) -> str:
    """Escape a cell a spreadsheet would run as a formula (prefix a quote)."""
    return "'" + value if _formula_like(value) else value


def unescape_cell(value: str) -> str:
    """The stored value of an exported cell."""
    if value.startswith("'") and _formula_like(value[1:]):
        return value[1:]
    return value


def _cell(name: str, value: Any) -> str:
    if value is None:
        return ""
    if name in ("ts", "lock_ts"):
        return events.iso(value)
    if isinstance(value, float):
        return repr(round(value, 3))
    if isinstance(value, str):
        return safe_cell(value)
    return str(value)


class _Line:
    """A write-through file for csv.writer that hands back each line."""

    def __init__(self) -> None:
        self.value = ""

    def write(self, text: str) -> None:
        self.value = text


def lines(
    conn: sqlite3.Connection,
    filters: Filters | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """CSV text, one line at a time, so memory stays flat however many events."""
    out = _Line()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(events.CSV_HEADER)
    yield out.value
    where, args = (filters or Filters()).where()
    names = events.CSV_HEADER
    n = 0
    for n, row in enumerate(iter_events(conn, where, args), 1):
        writer.writerow([_cell(name, row[name]) for name in names])
        yield out.value
        if progress is not None and n % 10_000 == 0:
            progress(n)
    if progress is not None and n % 10_000:
        progress(n)  # the bar ends at the true total


def count(conn: sqlite3.Connection, filters: Filters | None = None) -> int:
    where, args = (filters or Filters()).where()
    sql = "SELECT count(*) FROM events" + (f" WHERE {where}" if where else "")
    return int(conn.execute(sql, args).fetchone()[0])
