"""Histograms of write-lock holds and transaction times, kept per minute and per hour.

A 24-hour dashboard window holds about half a million holds at a million events a
day: reading them all takes a second. So the store also keeps, per time bucket,
series, call site and 1-2-5 bin, the count and the total of the values, updated in
the same transaction as the events (``Writer.write``, ``reap_abandoned`` and
``prune``; migration 5 fills it from the events already stored).

A window whose events span more than ``EXACT_SPAN`` is read as whole hours from the
hour rows, whole minutes at each end from the minute rows and the partial minutes at
each end from the events themselves, so counts and totals stay exact. A percentile
is then estimated inside its bin (``Hist.quantile``): it lies in the same bin as the
exact value, and equals it when that value is alone in its bin. Shorter windows
are read from the events, exactly, as before: they are fast already.
"""

from __future__ import annotations

import math
import sqlite3
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from lockwatch.events import IN_WINDOW, TXN_HOLD, WRITE_HOLD
from lockwatch.store.filters import Filters

# 1-2-5 edges in ms, from 10 µs to 10 minutes: fixed, so the binning is one CASE in SQL.
# Bin i is [EDGES[i-1], EDGES[i]); bin 0 is everything below the first edge and the
# last bin everything from the last edge up.
EDGES: tuple[float, ...] = tuple(
    m * 10.0**e for e in range(-2, 6) for m in (1, 2, 5) if m * 10.0**e <= 600_000
)
BINS = len(EDGES) + 1


def bin_of(value: float) -> int:
    """The bin of a value; ``bin_case`` is the same in SQL."""
    return bisect_right(EDGES, value)


def bin_case(column: str) -> str:
    # repr() round-trips, so SQLite compares against the very doubles bisect uses.
    whens = " ".join(f"WHEN {column} < {edge!r} THEN {i}" for i, edge in enumerate(EDGES))
    return f"CASE {whens} ELSE {len(EDGES)} END"


# Where a hold's lock was taken: a transaction's first write, or the autocommit write.
HOLD_SITE = "COALESCE(lock_call_site, call_site)"

MINUTE, HOUR = 60, 3600
# Windows whose events span at most this are read from the events, exactly.
EXACT_SPAN = 3600.0


@dataclass(frozen=True)
class Series:
    name: str
    where: str  # which events, in SQL
    site: str  # the call-site key, in SQL ('' for none: primary key columns are NOT NULL)
    value: str  # the column binned


TXN, WRITE, DURATION = "txn", "write", "duration"
_SITE_KEY = "COALESCE(lock_call_site, call_site, '')"  # HOLD_SITE, never NULL
SERIES: dict[str, Series] = {
    s.name: s
    for s in (
        # Transactions' holds and autocommit writes' holds: together the dashboard's holds.
        Series(TXN, TXN_HOLD, _SITE_KEY, "hold_ms"),
        Series(WRITE, WRITE_HOLD, _SITE_KEY, "hold_ms"),
        Series(DURATION, "kind = 'transaction' AND duration_ms IS NOT NULL", "''", "duration_ms"),
    )
}  # fmt: skip

# The bucket of an event: whole seconds, then integer division, in SQL and in Python
# alike (both exact), so a bucket holds exactly the ts in [bucket * span, + span).
# Negative times (never written by capture) are left out: SQLite's integer division
# truncates where Python's floors.
_BUCKET = "CAST(ts AS INTEGER) / {span}"

# Waits and busy errors are aggregated by their blocker, which ``Writer.attribute``
# fills in later, so they have no rollup: this partial index covers every column the
# dashboard and doctor group them by, and a query uses it only when its WHERE repeats
# ``WAITS`` (SQLite matches a partial index's WHERE term by term).
WAITS = "kind IN ('wait', 'busy')"
WAITS_INDEX = (
    "CREATE INDEX IF NOT EXISTS events_waits_cover ON events (kind, ts, classification,"
    f" stmt_class, outcome, blocker_call_site, call_site, wait_ms) WHERE {WAITS}"
)

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS rollup (
        span INTEGER NOT NULL, bucket INTEGER NOT NULL, series TEXT NOT NULL,
        site TEXT NOT NULL, bin INTEGER NOT NULL, n INTEGER NOT NULL, total_ms REAL NOT NULL,
        PRIMARY KEY (span, bucket, series, site, bin)
    ) WITHOUT ROWID""",
]


def _from_events(span: int, s: Series, where: str = "") -> str:
    return (
        f"SELECT {span}, {_BUCKET.format(span=span)} AS bucket, '{s.name}', {s.site} AS site,"
        f" {bin_case(s.value)} AS bin, count(*), sum({s.value}) FROM events"
        f" WHERE {s.where} AND ts >= 0{where} GROUP BY bucket, site, bin"
    )


# Migration 5: the minute rows from the events, then the hour rows from the minute rows.
BACKFILL = [
    *(f"INSERT INTO rollup {_from_events(MINUTE, s)}" for s in SERIES.values()),
    f"INSERT INTO rollup SELECT {HOUR}, bucket / {HOUR // MINUTE}, series, site, bin, sum(n),"
    f" sum(total_ms) FROM rollup WHERE span = {MINUTE} GROUP BY 2, 3, 4, 5",
]

UPSERT = (
    "INSERT INTO rollup (span, bucket, series, site, bin, n, total_ms) VALUES (?,?,?,?,?,?,?)"
    " ON CONFLICT (span, bucket, series, site, bin)"
    " DO UPDATE SET n = n + excluded.n, total_ms = total_ms + excluded.total_ms"
)
DROP_EMPTY = (
    "DELETE FROM rollup WHERE span = ? AND bucket = ? AND series = ? AND site = ? AND bin = ?"
    " AND n <= 0"
)

Increment = tuple[int, int, str, str, int, int, float]


def increments(
    rows: Iterable[Mapping[str, Any]], sign: int = 1, quiet: Iterable[QuietRow] = ()
) -> list[Increment]:
    """The rollup rows to add (sign 1) or take away (sign -1) for these events and
    quiet rows.

    Rows are event dicts (or ``sqlite3.Row``); only the columns their kind can
    fill are read. One pass, a bisect and a dict update per hold: the flusher runs it
    on every batch.
    """
    acc: dict[tuple[int, str, str, int], list[Any]] = {}

    def put(key: tuple[int, str, str, int], n: int, total: float) -> None:
        cell = acc.get(key)
        if cell is None:
            acc[key] = [n, total]
        else:
            cell[0] += n
            cell[1] += total

    def add(minute: int, series: str, site: str, value: float) -> None:
        put((minute, series, site, bisect_right(EDGES, value)), 1, value)

    for row in rows:
        kind = row["kind"]
        if kind == "query":
            hold = row["hold_ms"]
            if hold is None:
                continue
            ts = row["ts"]
            if ts is None or ts < 0:
                continue
            site = row["call_site"]
            add(int(ts) // MINUTE, WRITE, "" if site is None else site, hold)
        elif kind == "transaction":
            ts = row["ts"]
            if ts is None or ts < 0:
                continue
            minute = int(ts) // MINUTE
            hold = row["hold_ms"]
            if hold is not None:
                site = row["lock_call_site"]
                if site is None:
                    site = row["call_site"]
                add(minute, TXN, "" if site is None else site, hold)
            duration = row["duration_ms"]
            if duration is not None:
                add(minute, DURATION, "", duration)
    for q in quiet:  # within one second each, so within one minute
        if q.ts >= 0:
            put((int(q.ts) // MINUTE, q.series, q.site, q.bin), q.n, q.total_ms)
    out: list[Increment] = []
    hours: dict[tuple[int, str, str, int], list[Any]] = {}
    for (minute, series, site, b), (n, total) in acc.items():
        out.append((MINUTE, minute, series, site, b, sign * n, sign * total))
        key = (minute // (HOUR // MINUTE), series, site, b)
        cell = hours.get(key)
        if cell is None:
            hours[key] = [n, total]
        else:
            cell[0] += n
            cell[1] += total
    out += [(HOUR, h, s, site, b, sign * n, sign * t) for (h, s, site, b), (n, t) in hours.items()]
    return out


def apply(
    conn: sqlite3.Connection,
    rows: Iterable[Mapping[str, Any]],
    sign: int = 1,
    quiet: Iterable[QuietRow] = (),
) -> None:
    """Add (or take away) these events' and quiet rows' share; call inside their own
    transaction."""
    changes = increments(rows, sign, quiet)
    if not changes:
        return
    conn.executemany(UPSERT, changes)
    if sign < 0:
        # Keep no empty rows behind: pruning must shrink the rollup with the events.
        conn.executemany(DROP_EMPTY, [c[:5] for c in changes])


# -- quiet writes -------------------------------------------------------------
# A write or transaction nobody waited for, that did not fail and held the lock
# briefly, is no event: the flusher keeps one row per second, database, series,
# call site and bin per batch, with the count, total and longest (lockwatch.pipeline.quiet).
# They go into the minute and hour rows like events, in the same transaction.


class QuietRow(NamedTuple):
    ts: float  # the first write's time; every write of a row is in the same second
    last_ts: float
    db: str
    pid: int
    series: str  # WRITE or TXN (holds), DURATION (transactions' wall time)
    site: str  # as the rollup keys it: '' for none
    bin: int
    n: int
    total_ms: float
    max_ms: float


QUIET_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS quiet (
        id INTEGER PRIMARY KEY, ts REAL NOT NULL, last_ts REAL NOT NULL, db TEXT NOT NULL,
        pid INTEGER NOT NULL, series TEXT NOT NULL, site TEXT NOT NULL, bin INTEGER NOT NULL,
        n INTEGER NOT NULL, total_ms REAL NOT NULL, max_ms REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS quiet_ts ON quiet (ts)",
]
QUIET_INSERT = (
    f"INSERT INTO quiet ({', '.join(QuietRow._fields)})"
    f" VALUES ({', '.join('?' * len(QuietRow._fields))})"
)
QUIET_SELECT = f"SELECT id, {', '.join(QuietRow._fields)} FROM quiet"  # id first


def quiet_available(conn: sqlite3.Connection) -> bool:
    """False for a store not migrated to schema 9 yet."""
    return _has_table(conn, "quiet")


def quiet_histograms(
    conn: sqlite3.Connection, since: float, until: float, names: Sequence[str],
    by_site: bool = True, end_open: bool = False,
) -> dict[tuple[str, str], Hist]:  # fmt: skip
    """Per (series, site): the quiet writes with since <= ts <= until (< until if
    ``end_open``), as histograms."""
    out: dict[tuple[str, str], Hist] = {}
    if not quiet_available(conn):
        return out
    marks = ",".join("?" * len(names))
    site = "site" if by_site else "''"
    upper = "<" if end_open else "<="
    for series, key, b, n, total in conn.execute(
        f"SELECT series, {site}, bin, sum(n), sum(total_ms) FROM quiet WHERE ts >= ?"
        f" AND ts {upper} ? AND series IN ({marks}) GROUP BY 1, 2, 3",
        (since, until, *names),
    ):
        h = out.get((series, key))
        if h is None:
            h = out[series, key] = Hist()
        h.n[b] += n
        h.total[b] += total
    return out


def quiet_longest(conn: sqlite3.Connection, since: float, until: float) -> float | None:
    """The longest quiet hold in the window, in ms."""
    if not quiet_available(conn):
        return None
    row = conn.execute(
        f"SELECT max(max_ms) FROM quiet WHERE {IN_WINDOW} AND series IN ('{TXN}', '{WRITE}')",
        (since, until),
    ).fetchone()
    return None if row is None else row[0]


def summary(
    values: Sequence[float], quiet: Hist | None, q: float = 95
) -> tuple[int, float, float | None, bool]:
    """(count, total, q-th percentile, estimated) of exact values (sorted) and a
    histogram of quiet ones. The percentile is exact when it falls among the exact
    values above every quiet bin, else estimated inside its bin."""
    if quiet is None or quiet.count == 0:
        if not values:
            return 0, 0.0, None, False
        return len(values), math.fsum(values), values[nearest_rank(len(values), q) - 1], False
    n = len(values) + quiet.count
    rank = nearest_rank(n, q)
    top_bin = max(i for i, k in enumerate(quiet.n) if k > 0)
    ceiling = EDGES[top_bin] if top_bin < len(EDGES) else math.inf
    above = len(values) - bisect_left(values, ceiling)  # exact values over every quiet one
    total = math.fsum(values) + quiet.sum_ms
    if rank > n - above:
        return n, total, values[len(values) - (n - rank) - 1], False
    both = Hist(list(quiet.n), list(quiet.total))
    for v in values:
        b = bisect_right(EDGES, v)
        both.n[b] += 1
        both.total[b] += v
    return n, total, both.quantile(rank), True


# -- reading ------------------------------------------------------------------


@dataclass
class Hist:
    """Count and total of the values in each bin."""

    n: list[int] = field(default_factory=lambda: [0] * BINS)
    total: list[float] = field(default_factory=lambda: [0.0] * BINS)

    @property
    def count(self) -> int:
        return sum(self.n)

    @property
    def sum_ms(self) -> float:
        return math.fsum(self.total)

    def add(self, other: Hist) -> None:
        for i in range(BINS):
            self.n[i] += other.n[i]
            self.total[i] += other.total[i]

    def quantile(self, rank: int) -> float | None:
        """An estimate of the rank-th smallest value (1-based), inside its bin.

        The bin is known exactly from the counts. Within it the values are taken as
        spread evenly around their mean (known from the total), as widely as the bin
        allows: so a value alone in its bin comes out exact, and the estimate is never
        outside [lower edge, upper edge).
        """
        seen = 0
        for i, k in enumerate(self.n):
            if k <= 0:
                continue
            if seen + k < rank:
                seen += k
                continue
            mean = self.total[i] / k
            lo = EDGES[i - 1] if i > 0 else min(0.0, mean)
            hi = EDGES[i] if i < len(EDGES) else math.inf
            # Float residue (totals after pruning) must not move the mean out of its bin.
            mean = min(max(mean, lo), math.nextafter(hi, -math.inf))
            half = min(mean - lo, hi - mean)
            j = rank - seen
            return mean + half * ((2 * j - 1) / k - 1)
        return None


def by_site(
    hists: Mapping[tuple[str, str], Hist], names: Sequence[str], unknown: str
) -> dict[str, Hist]:
    """The histograms of the series ``names`` summed per site (no site: ``unknown``)."""
    out: dict[str, Hist] = {}
    for (series, site), hist in hists.items():
        if series in names:
            out.setdefault(site or unknown, Hist()).add(hist)
    return out


def nearest_rank(count: int, q: float) -> int:
    """The rank of the q-th percentile by nearest rank (the dashboard's definition)."""
    return max(math.ceil(q / 100.0 * count), 1)


def available(conn: sqlite3.Connection) -> bool:
    """False for a store not migrated yet (a read-only dashboard does not migrate)."""
    return _has_table(conn, "rollup")


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


def long_window(
    conn: sqlite3.Connection, since: float | None, until: float | None
) -> tuple[float, float] | None:
    """The first and last event (or quiet write) time in the window when they are more than
    ``EXACT_SPAN`` apart and the store has a rollup; else None (read the events).

    Narrowing to the stored events keeps a long window over a young store exact.
    """
    clause, args = Filters(since=since, until=until).where()
    where = f" WHERE {clause}" if clause else ""
    # Both through the ts indexes: one row each, of the events and of the quiet writes.
    ends: list[float] = []
    for table in ("events", "quiet") if quiet_available(conn) else ("events",):
        for order in ("", " DESC"):
            row = conn.execute(
                f"SELECT ts FROM {table}{where} ORDER BY ts{order} LIMIT 1", args
            ).fetchone()
            if row is not None and row[0] is not None:
                ends.append(float(row[0]))
    if not ends:
        return None
    a, b = min(ends), max(ends)
    if b - a <= EXACT_SPAN or not available(conn):
        return None
    return a, b


def _ceil_div(value: float, span: int) -> int:
    """The first bucket starting at or after value (exact: integers only)."""
    return -(-math.ceil(value) // span)


def histograms(
    conn: sqlite3.Connection,
    since: float,
    until: float,
    names: Sequence[str],
    by_site: bool = True,
) -> dict[tuple[str, str], Hist]:
    """Per (series, site): the histogram of the events with since <= ts <= until.

    Whole hours come from the hour rows, whole minutes around them from the minute
    rows, and the rest of the window (under a minute at each end) from the events.
    Without ``by_site`` the site is '' and the sites are summed.
    """
    out: dict[tuple[str, str], Hist] = {}

    def put(series: str, site: str, b: int, n: int, total: float) -> None:
        h = out.get((series, site))
        if h is None:
            h = out[series, site] = Hist()
        h.n[b] += n
        h.total[b] += total

    # Whole minutes [m0, m1) and whole hours [h0, h1) inside the window; a bucket is
    # whole when it starts at or after since and ends at or before until.
    m0, m1 = max(_ceil_div(since, MINUTE), 0), math.floor(until) // MINUTE
    h0, h1 = max(_ceil_div(since, HOUR), 0), math.floor(until) // HOUR
    per_hour = HOUR // MINUTE
    ranges: list[tuple[int, int, int]] = []  # (span, first bucket, end bucket)
    if h0 < h1:
        ranges += [(MINUTE, m0, h0 * per_hour), (HOUR, h0, h1), (MINUTE, h1 * per_hour, m1)]
    elif m0 < m1:
        ranges.append((MINUTE, m0, m1))
    marks = ",".join("?" * len(names))
    site = "site" if by_site else "''"
    for span, first, end in ranges:
        if first >= end:
            continue
        for series, key, b, n, total in conn.execute(
            f"SELECT series, {site}, bin, sum(n), sum(total_ms) FROM rollup WHERE span = ?"
            f" AND bucket >= ? AND bucket < ? AND series IN ({marks}) GROUP BY 1, 2, 3",
            (span, first, end, *names),
        ):
            put(series, key, b, n, total)
    if m0 < m1:
        rest = [
            ("ts >= ? AND ts < ?", (since, m0 * MINUTE)),
            (f"{IN_WINDOW}", (m1 * MINUTE, until)),
        ]
        edges = [(since, m0 * MINUTE, True), (m1 * MINUTE, until, False)]
    else:
        rest = [(f"{IN_WINDOW}", (since, until))]
        edges = [(since, until, False)]
    for a, b, end_open in edges:  # the quiet writes of the partial minutes
        for (series, key), h in quiet_histograms(conn, a, b, names, by_site, end_open).items():
            for i, k in enumerate(h.n):
                if k:
                    put(series, key, i, k, h.total[i])
    for name in names:
        s = SERIES[name]
        key_sql = s.site if by_site else "''"
        for clause, args in rest:
            for key, b, n, total in conn.execute(
                f"SELECT {key_sql}, {bin_case(s.value)} AS bin, count(*), sum({s.value})"
                f" FROM events WHERE {s.where} AND {clause} GROUP BY 1, bin",
                args,
            ):
                put(name, key, b, n, total)
    return out
