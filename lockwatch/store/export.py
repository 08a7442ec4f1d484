"""CSV export: one row per event, the fixed header first, streamed from the store.

SQLite writes the CSV text. Fetching 46 values a row through Python's sqlite3 and
formatting them with csv.writer costs more than the whole export may take, so each
block of rows comes back as one string: a printf() per row, joined by group_concat().
Every cell is what csv.writer would write for the value the Python path reads (see
``_reference``); a cell the SQL cannot render exactly is marked, and its row is
redone in Python. tests/test_unit_export.py compares the two on random rows.

Formula escaping goes by the value's type, not the column's: SQLite keeps text that
does not look like a number as text in a numeric column (a ``status`` of ``=cmd()``).
Written to stdout, control characters are shown as visible pictures (``terminal_safe``):
a request path can hold a terminal escape. ``-o FILE`` keeps the stored values.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import math
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from lockwatch import events
from lockwatch.store.filters import Filters

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


# The Python path: formula escaping of TEXT columns in SQL, and of text in any other
# column in Python; times by fast_iso; the rest as the values come (None: an empty
# cell), through csv.writer.
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
_NOT_TEXT = [at for at, column in enumerate(events.COLUMNS) if column.sqltype != "TEXT"]


def _iso_cell(value: Any) -> Any:
    # A time that is not a number is written as it is (NULL: an empty cell).
    return fast_iso(value) if isinstance(value, float) else value


def _reference(cursor: sqlite3.Cursor, ids: Sequence[int]) -> dict[int, str]:
    """The CSV line of each of `ids`, rendered in Python."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    done: dict[int, str] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        sql = f"SELECT id, {_SELECT} FROM events WHERE id IN ({', '.join('?' * len(part))})"
        for row in cursor.execute(sql, part):
            cells = list(row[1:])
            cells[_TS_AT] = _iso_cell(cells[_TS_AT])
            cells[_LOCK_TS_AT] = _iso_cell(cells[_LOCK_TS_AT])
            for at in _NOT_TEXT:  # text where a number belongs: escaped all the same
                if isinstance(cells[at], str):
                    cells[at] = safe_cell(cells[at])
            out.seek(0)
            out.truncate()
            writer.writerow(cells)
            done[row[0]] = out.getvalue()
    return done


# The SQL path. A cell it cannot render exactly (a NUL or a blob in text, a value of
# another type than its column's, a number that is not a 3-decimal value, a time out
# of the day table or on a rounding tie) becomes this character; the lines that
# contain it are redone by _reference (so data containing it only costs time).
_MARK = "\x1a"

_NAMES = ", ".join(f'"{c.name}"' for c in events.COLUMNS)
_WANT: dict[str, type] = {"TEXT": str, "INTEGER": int, "REAL": float}


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _csv_cell(text: str) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([text, ""])
    return out.getvalue()[: -len(",\r\n")]


def _encoded(column: events.Column, value: Any) -> str:
    """The cell csv.writer writes for a stored value of the column's own type."""
    if column.sqltype == "TEXT":
        return _csv_cell(safe_cell(value))
    return _csv_cell(str(value))  # str() of a float is its repr(), as in csv


def _text_sql(c: str) -> str:
    # A first byte from 'A' up, or in '.'..'<', cannot start a formula (= + - @ TAB CR
    # are 61 43 45 64 9 13): plain comparisons settle most cells before any function
    # call. Quoting as csv does
    # (QUOTE_MINIMAL): when the cell holds a comma, a quote, CR or LF.
    escaped = (
        f"CASE WHEN {c} >= 'A' OR ({c} >= '.' AND {c} < '=') THEN {c}"
        f" WHEN unicode(ltrim({c}, '''')) IN (61, 43, 45, 64, 9, 13) THEN '''' || {c}"
        f" ELSE {c} END"
    )
    # A blob sorts after all text. printf() and GLOB stop at a NUL.
    return (
        f"CASE WHEN {c} >= x'' OR instr({c}, char(0)) THEN '{_MARK}'"
        f" WHEN {c} GLOB '*\"*' OR {c} GLOB '*,*' OR {c} GLOB '*\n*' OR {c} GLOB '*\r*'"
        f" THEN '\"' || replace({escaped}, '\"', '\"\"') || '\"' ELSE {escaped} END"
    )


def _integer_sql(c: str) -> str:
    # printf's %s writes an integer as str() does.
    return f"CASE WHEN {c} = CAST({c} AS INTEGER) OR {c} IS NULL THEN {c} ELSE '{_MARK}' END"


def _real_sql(c: str) -> str:
    # Capture stores milliseconds rounded to 3 decimals. Such a value below 1e12 is
    # the double nearest n/1000, a decimal of at most 15 significant digits, and no
    # other decimal that short rounds to the same double: so repr() writes n/1000,
    # trailing zeros dropped. n / 1000.0 is correctly rounded, so the test is exact.
    n = f"CAST({c} * 1000 + 0.5 AS INTEGER)"
    return (
        f"CASE WHEN {c} >= 0 AND {c} < 1e12 AND {n} / 1000.0 = {c} THEN CASE"
        f" WHEN {n} % 1000 = 0 THEN printf('%d.0', {n} / 1000)"
        f" WHEN {n} % 100 = 0 THEN printf('%d.%d', {n} / 1000, {n} % 1000 / 100)"
        f" WHEN {n} % 10 = 0 THEN printf('%d.%02d', {n} / 1000, {n} % 1000 / 10)"
        f" ELSE printf('%d.%03d', {n} / 1000, {n} % 1000) END"
        f" WHEN {c} IS NULL THEN NULL ELSE '{_MARK}' END"
    )


_DAY = 86_400
_MAX_DAYS = 40_000  # the day table: 11 bytes a day, about 110 years


@functools.cache
def _clock() -> bytes:
    """'HH:MM:SS' for each second of a day, 8 bytes apiece (substr() of a blob is O(1))."""
    two = [f"{i:02d}" for i in range(60)]
    return "".join(f"{h}:{m}:{s}" for h, m, s in itertools.product(two[:24], two, two)).encode()


class _Plan:
    """The SQL of a whole CSV line (after printf), specialised on a sample of the rows.

    Two things make it cheap. A value frequent in the sample is matched by one
    comparison and written from a literal encoded by Python (``_encoded``). And rows
    of a kind leave most columns NULL: a line for that kind checks they are NULL
    (two steps each) instead of passing them to printf, and leaves out the NULL
    test of the columns the kind always fills (the other branches handle NULL too).
    """

    LONGEST = 200  # longer values are left to the general path (SQL text size)

    def __init__(
        self, sample: list[tuple[Any, ...]], first_day: int, last_day: int, top: int = 12
    ) -> None:
        # Up to `top` values a column: the parameters stay under SQLite's old 999 limit.
        self.params: list[Any] = []
        need = max(2, len(sample) // 100)
        self.bare: dict[str, tuple[str, list[str]]] = {}  # no NULL test of its own
        self.cells: dict[str, tuple[str, list[str]]] = {}
        days = "".join(
            time.strftime("%Y-%m-%dT", time.gmtime(day * _DAY))
            for day in range(first_day, last_day + 1)
        )
        self._days, self._clock = self._param(days.encode()), self._param(_clock())
        self._day0 = first_day
        self._lo = self._param(float(first_day * _DAY))
        self._hi = self._param(math.nextafter(float((last_day + 1) * _DAY), 0.0))
        for at, column in enumerate(events.COLUMNS):
            c = f'"{column.name}"'
            if column.name == "ts":
                self.cells["ts"] = self.bare["ts"] = self._time(c)
                continue
            if column.name == "lock_ts":
                fmt, args = self._time(c)
                nested = (
                    f"CASE WHEN {c} IS NULL THEN NULL ELSE printf('{fmt}', {', '.join(args)}) END"
                )
                self.cells["lock_ts"] = self.bare["lock_ts"] = ("%s", [nested])
                continue
            if column.name == "id":  # the rowid: always an integer
                self.cells["id"] = self.bare["id"] = ("%d", [c])
                continue
            want = _WANT[column.sqltype]
            counts = Counter(row[at] for row in sample if type(row[at]) is want)
            common = [
                value
                for value, k in counts.most_common(top)
                if k >= need and not (want is str and ("\0" in value or len(value) > self.LONGEST))
            ]
            general = {"TEXT": _text_sql, "INTEGER": _integer_sql, "REAL": _real_sql}[
                column.sqltype
            ](c)
            # Encoded values go in as literals: printf would copy a bound text parameter
            # (to add the NUL it lacks) on every row.
            whens = " ".join(
                f"WHEN {self._param(v)} THEN {_sql_text(_encoded(column, v))}" for v in common
            )
            bare = f"CASE {c} {whens} ELSE {general} END" if whens else general
            self.bare[column.name] = ("%s", [bare])
            self.cells[column.name] = ("%s", [f"CASE WHEN {c} IS NULL THEN NULL ELSE {bare} END"])
        self.line = self._line(sample, need)

    def _param(self, value: Any) -> str:
        self.params.append(value)
        return f"?{len(self.params)}"

    def _time(self, t: str) -> tuple[str, list[str]]:
        """fast_iso(t) as a printf format and its arguments."""
        whole = f"CAST({t} AS INTEGER)"
        half_up = f"(({t} - {whole}) * 1000000 + 0.5)"  # fast_iso's arithmetic, to the bit
        micros = f"CAST({half_up} AS INTEGER)"
        # Truncating half_up is round() except on a tie (round() goes to even) or when
        # the addition rounds up to a whole number; both leave half_up whole. A carry
        # into the next second is left to Python too.
        exact = f"{t} BETWEEN {self._lo} AND {self._hi} AND {micros} NOT IN ({half_up}, 1000000)"
        day = f"({whole} / {_DAY} - {self._day0}) * 11 + 1"
        return "%s%s.%06dZ", [
            f"CASE WHEN {exact} THEN substr({self._days}, {day}, 11) ELSE '{_MARK}' END",
            f"substr({self._clock}, {whole} % {_DAY} * 8 + 1, 8)",
            micros,
        ]

    def _printf(self, cells: list[str | None], full: set[str]) -> str:
        """printf over the cells: a column name, None for an empty cell, or '=text'."""
        fmt: list[str] = []
        args: list[str] = []
        for cell in cells:
            if cell is None:
                fmt.append("")
            elif cell.startswith("="):
                fmt.append(cell[1:].replace("%", "%%"))
            else:
                f, a = (self.bare if cell in full else self.cells)[cell]
                fmt.append(f)
                args += a
        return f"printf({_sql_text(','.join(fmt) + chr(13) + chr(10))}, {', '.join(args)})"

    def _line(self, sample: list[tuple[Any, ...]], need: int) -> str:
        names = events.NAMES
        kinds = Counter(row[1] for row in sample if type(row[1]) is str)
        branches = []
        for kind, k in kinds.most_common(8):
            if k < need or "\0" in kind:
                continue
            rows = [row for row in sample if row[1] == kind]
            used = set(events.KIND_COLUMNS.get(kind, ())) | {"id", "ts", "kind"}
            used.update(n for row in rows for n, v in zip(names, row, strict=True) if v is not None)
            full = {n for at, n in enumerate(names) if all(row[at] is not None for row in rows)}
            null = "".join(f' AND "{n}" IS NULL' for n in names if n not in used)
            kind_cell = "=" + _encoded(events.COLUMNS[1], kind)
            cells = [kind_cell if n == "kind" else n if n in used else None for n in names]
            branches.append(
                f"WHEN kind = {self._param(kind)}{null} THEN {self._printf(cells, full)}"
            )
        general = self._printf(list(names), set())
        return f"CASE {' '.join(branches)} ELSE {general} END" if branches else general


def _sample(
    cursor: sqlite3.Cursor, clause: str, args: list[Any], first: int, last: int
) -> list[tuple[Any, ...]]:
    """About 2000 rows from 20 places along the export (each read bounded)."""
    rows: list[tuple[Any, ...]] = []
    step = max((last - first) // 20, 1)
    sql = (
        f"SELECT {_NAMES} FROM events NOT INDEXED WHERE id > ? AND id <= ?{clause}"
        " ORDER BY id LIMIT 100"
    )
    for low in range(first - 1, last, step):
        rows += cursor.execute(sql, (low, low + 5000, *args)).fetchall()
    return rows


def _day_range(cursor: sqlite3.Cursor) -> tuple[int, int]:
    lo, hi = cursor.execute(
        "SELECT (SELECT min(ts) FROM events WHERE ts BETWEEN 0 AND 253402300799),"
        " (SELECT max(ts) FROM events WHERE ts BETWEEN 0 AND 253402300799)"
    ).fetchone()
    if lo is None:
        return 0, 0
    first = int(lo) // _DAY
    # A day more than the newest event: a transaction's lock_ts comes after its ts.
    return first, min(int(hi) // _DAY + 1, first + _MAX_DAYS - 1)


def _id_range(cursor: sqlite3.Cursor, filters: Filters) -> tuple[int | None, int | None]:
    # The ts index finds where a time window starts; the scan itself is by id.
    since = " WHERE ts >= ?" if filters.since is not None else ""
    until = " WHERE ts <= ?" if filters.until is not None else ""
    lo, hi = cursor.execute(
        f"SELECT (SELECT min(id) FROM events{since}), (SELECT max(id) FROM events{until})",
        [v for v in (filters.since, filters.until) if v is not None],
    ).fetchone()
    return lo, hi


def _header() -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(events.CSV_HEADER)
    return out.getvalue()


def lines(
    conn: sqlite3.Connection,
    filters: Filters | None = None,
    progress: Callable[[int], None] | None = None,
    chunk: int = 5000,
) -> Iterator[str]:
    """CSV text, a block of rows at a time, so memory stays flat however many events.

    A block is the rows of `chunk` consecutive ids, read in its own short query.
    Events stored after the export starts are not in it.
    """
    yield _header()
    yield from _blocks(conn, filters, progress, chunk)


def prepare(
    conn: sqlite3.Connection,
    filters: Filters | None = None,
    progress: Callable[[int], None] | None = None,
    chunk: int = 5000,
) -> Iterator[str]:
    """``lines()``, with the store read before it returns: the plan's queries and the
    first block. A store that cannot be read raises ``sqlite3.DatabaseError`` here,
    while an error can still be answered, not halfway through a response or a file.
    """
    blocks = _blocks(conn, filters, progress, chunk)
    first = next(blocks, None)

    def rest() -> Iterator[str]:
        yield _header()
        if first is not None:
            yield first
            yield from blocks

    return rest()


def error_row(message: str) -> str:
    """A last row saying why an export ended early (a started response cannot fail)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([f"# lockwatch: {message}"])
    return out.getvalue()


def _blocks(
    conn: sqlite3.Connection,
    filters: Filters | None,
    progress: Callable[[int], None] | None,
    chunk: int,
) -> Iterator[str]:
    filters = filters or Filters()
    where, args = filters.where()
    clause = f" AND ({where})" if where else ""
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples, whatever the connection's factory
    first, last = _id_range(cursor, filters)
    if first is None or last is None:
        return
    sample, days = _sample(cursor, clause, args, first, last), _day_range(cursor)
    for top in (12, 3, 0):  # SQLite's default limit on a statement is 1 MB
        plan = _Plan(sample, *days, top=top)
        if len(plan.line) < 200_000:
            break
    p = len(plan.params)
    # NOT INDEXED keeps the scan in id order (group_concat joins rows in scan order);
    # the filter's plain ? parameters take the numbers after ?{p + 2}.
    scan = f"FROM events NOT INDEXED WHERE id > ?{p + 1} AND id <= ?{p + 2}{clause}"
    joined = f"SELECT count(*), group_concat({plan.line}, '') {scan}"
    each = f"SELECT id, {plan.line} {scan} ORDER BY id"
    n = 0
    for low in range(first - 1, last, chunk):
        bounds = (*plan.params, low, low + chunk, *args)
        try:
            got, block = cursor.execute(joined, bounds).fetchone()
        except sqlite3.DataError:  # a block longer than SQLite's string limit
            got, block = -1, _MARK
        if not got:
            continue
        if _MARK in block:
            rows = cursor.execute(each, bounds).fetchall()
            redo = _reference(cursor, [i for i, line in rows if _MARK in line])
            block = "".join(redo.get(i, "") if _MARK in line else line for i, line in rows)
            got = len(rows)
        yield block
        n += got
        if progress is not None:
            progress(n)


# C0 controls but TAB and LF, DEL, C1 controls, and a CR that does not end a line: on a
# terminal they move the cursor, retitle the window, or start an escape sequence.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")
_PICTURES = {
    **{c: 0x2400 + c for c in range(0x20)},  # U+2400 CONTROL PICTURES: ␀ .. ␟, ␍ for CR
    0x7F: 0x2421,  # ␡
    **{c: 0xFFFD for c in range(0x80, 0xA0)},  # C1 has no pictures
}


def terminal_safe(text: str) -> str:
    """`text` with control characters shown as pictures (ESC as ␛), CSV line ends kept."""
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(lambda m: chr(_PICTURES[ord(m.group())]), text)


def count(conn: sqlite3.Connection, filters: Filters | None = None) -> int:
    where, args = (filters or Filters()).where()
    sql = "SELECT count(*) FROM events" + (f" WHERE {where}" if where else "")
    return int(conn.execute(sql, args).fetchone()[0])
