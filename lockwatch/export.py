"""CSV export: one row per event, the fixed header first, streamed from the store."""

from __future__ import annotations

import csv
import io
import sqlite3
import time
from collections.abc import Callable, Iterator

from . import events
from .filters import Filters

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


# Formula escaping runs inside SQLite, in C; times are formatted in Python with
# a per-second cache (SQLite's version of the rounding costs more than the rest
# of the export). Numbers and NULLs go to csv as they are (NULL: an empty cell).
# tests/test_unit_export.py checks both against safe_cell() and events.iso().
_TIMES = ("ts", "lock_ts")
_TS_AT = events.CSV_HEADER.index("ts")
_LOCK_TS_AT = events.CSV_HEADER.index("lock_ts")
_seconds: dict[int, str] = {}


def fast_iso(ts: float) -> str:
    """events.iso(ts), quicker for many timestamps in the same seconds."""
    whole = int(ts)
    micros = round((ts - whole) * 1_000_000)  # half to even, as datetime rounds
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    prefix = _seconds.get(whole)
    if prefix is None:
        if len(_seconds) > 100_000:
            _seconds.clear()
        prefix = _seconds[whole] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{prefix}.{micros:06d}Z"


_ESCAPE = (
    "CASE WHEN substr(ltrim({c}, ''''), 1, 1) IN ('=', '+', '-', '@', char(9), char(13))"
    " THEN '''' || {c} ELSE {c} END"
)


def _select() -> str:
    parts = []
    for column in events.COLUMNS:
        quoted = f'"{column.name}"'
        if column.sqltype == "TEXT":
            parts.append(_ESCAPE.format(c=quoted))
        else:
            parts.append(quoted)
    return ", ".join(parts)


_SELECT = _select()


def lines(
    conn: sqlite3.Connection,
    filters: Filters | None = None,
    progress: Callable[[int], None] | None = None,
    chunk: int = 5000,
) -> Iterator[str]:
    """CSV text, a block of rows at a time, so memory stays flat however many events.

    Rows are read by keyset pagination on id, each block in its own short read.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(events.CSV_HEADER)
    yield out.getvalue()
    where, args = (filters or Filters()).where()
    clause = f" AND ({where})" if where else ""
    sql = f"SELECT id, {_SELECT} FROM events WHERE id > ?{clause} ORDER BY id LIMIT ?"
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples, whatever the connection's factory
    last, n = 0, 0
    while True:
        rows = cursor.execute(sql, (last, *args, chunk)).fetchall()
        if not rows:
            break
        last = rows[-1][0]
        out.seek(0)
        out.truncate()
        for row in rows:
            cells = list(row[1:])
            cells[_TS_AT] = fast_iso(cells[_TS_AT])
            if cells[_LOCK_TS_AT] is not None:
                cells[_LOCK_TS_AT] = fast_iso(cells[_LOCK_TS_AT])
            # csv writes None as an empty cell and numbers as repr() would.
            writer.writerow(cells)
        yield out.getvalue()
        n += len(rows)
        if progress is not None:
            progress(n)
        if len(rows) < chunk:
            break


def count(conn: sqlite3.Connection, filters: Filters | None = None) -> int:
    where, args = (filters or Filters()).where()
    sql = "SELECT count(*) FROM events" + (f" WHERE {where}" if where else "")
    return int(conn.execute(sql, args).fetchone()[0])
