"""CSV export: one row per event, the fixed header first, streamed from the store."""

from __future__ import annotations

import csv
import io
import sqlite3
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


# The conversions run inside SQLite, in C, so a million rows take seconds:
# times become ISO-8601 with microseconds, text cells are escaped as
# safe_cell() does, and numbers and NULLs go to csv as they are (NULL is an
# empty cell). tests/test_unit_export.py checks both sides agree.
_TIMES = ("ts", "lock_ts")
# Microseconds rounded half to even, as datetime.fromtimestamp() rounds them.
_FRAC = "(({c} - CAST({c} AS INTEGER)) * 1000000)"
_FLOOR = f"CAST({_FRAC} AS INTEGER)"
_MICROS = (
    f"(CASE WHEN {_FRAC} - {_FLOOR} > 0.5 OR ({_FRAC} - {_FLOOR} = 0.5 AND {_FLOOR} % 2 = 1)"
    f" THEN {_FLOOR} + 1 ELSE {_FLOOR} END)"
)
_ISO = (
    "CASE WHEN {c} IS NULL THEN NULL ELSE"
    f" strftime('%Y-%m-%dT%H:%M:%S', CAST({{c}} AS INTEGER) + ({_MICROS} = 1000000),"
    f" 'unixepoch') || '.' || printf('%06d', {_MICROS} % 1000000) || 'Z' END"
)
_ESCAPE = (
    "CASE WHEN substr(ltrim({c}, ''''), 1, 1) IN ('=', '+', '-', '@', char(9), char(13))"
    " THEN '''' || {c} ELSE {c} END"
)


def _select() -> str:
    parts = []
    for column in events.COLUMNS:
        quoted = f'"{column.name}"'
        if column.name in _TIMES:
            parts.append(_ISO.format(c=quoted))
        elif column.sqltype == "TEXT":
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
        # csv writes None as an empty cell and numbers as repr() would.
        writer.writerows([row[1:] for row in rows])
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
