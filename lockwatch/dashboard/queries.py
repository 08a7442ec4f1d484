"""Aggregation SQL over the event store, shared by the dashboard, the doctor and benchmarks.

Every function takes a read-only ``sqlite3.Connection`` and a time range, and
returns plain Python data (no plotly, no Django). Each query is bounded by the
``events(kind, ts)`` or ``events(ts)`` index, and heavy results are cut to a
fixed size here, so a page stays fast on a store of a million events. Hold and
duration histograms over windows longer than an hour come from the store's rollup
(``lockwatch.store.rollup``): counts and totals exact, a p95 estimated within its bin.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lockwatch import events, store
from lockwatch.events import HOLD, IN_WINDOW
from lockwatch.live import PAYLOAD, payload
from lockwatch.store import rollup
from lockwatch.store.filters import Filters

# Columns of the events table (the websocket's PAYLOAD is in lockwatch.live): a subset
# of the one schema, so a renamed column fails here at import rather than in a template.
# The blocker sits next to the call site, and pid and thread under the context, so the
# table fits 1280 px without scrolling sideways.
TABLE: tuple[str, ...] = (
    "ts", "kind", "duration_ms", "wait_ms", "hold_ms", "call_site", "blocker_call_site",
    "context", "sql",
)  # fmt: skip
_missing = set(PAYLOAD + TABLE) - events.INDEX.keys()
assert not _missing, f"not event columns: {_missing}"

COLS = ", ".join(f'"{name}"' for name in PAYLOAD)  # the payload's columns, as SQL
# Where a hold's lock was taken: a transaction's first write, or the autocommit write itself.
HOLD_SITE = rollup.HOLD_SITE
HOLD_START = "COALESCE(lock_ts, ts + COALESCE(wait_ms, 0) / 1000.0)"


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    return sorted_values[rollup.nearest_rank(len(sorted_values), q) - 1]


# -- header figures ------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    events_per_s: float
    busy: int
    worst_hold_ms: float | None
    worst_hold_id: int | None
    dropped: int
    lost: int
    live_missed: int  # events that reached the store but not the live path (Redis down)
    capture_mode: str | None  # exact, inferred, or None when no process has reported
    processes: int
    last_id: int


def header(
    conn: sqlite3.Connection, since: float, until: float, now: float | None = None
) -> Header:
    now = time.time() if now is None else now
    rate_span = 10.0
    (recent,) = conn.execute(
        f"SELECT count(*) FROM events WHERE {IN_WINDOW}", (now - rate_span, now)
    ).fetchone()
    (busy,) = conn.execute(
        f"SELECT count(*) FROM events WHERE kind = 'busy' AND {IN_WINDOW}", (since, until)
    ).fetchone()
    worst = conn.execute(
        f"SELECT id, hold_ms FROM events WHERE {HOLD} AND {IN_WINDOW}"
        " ORDER BY hold_ms DESC LIMIT 1",
        (since, until),
    ).fetchone()
    quiet = rollup.quiet_longest(conn, since, until)  # shorter than any stored hold
    if quiet is not None and (worst is None or quiet > worst["hold_ms"]):
        worst = {"id": None, "hold_ms": quiet}
    proc = store.totals(conn)
    last = conn.execute("SELECT COALESCE(max(id), 0) FROM events").fetchone()[0]
    mode = None
    if proc.processes:
        mode = "inferred" if proc.inferred else "exact"
    return Header(
        events_per_s=recent / rate_span,
        busy=int(busy),
        worst_hold_ms=worst["hold_ms"] if worst else None,
        worst_hold_id=worst["id"] if worst else None,
        dropped=proc.dropped,
        lost=proc.lost,
        live_missed=proc.live_missed,
        capture_mode=mode,
        processes=proc.processes,
        last_id=int(last),
    )


def is_empty(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM events LIMIT 1").fetchone() is None


# -- time series ---------------------------------------------------------------


@dataclass
class Series:
    """Values per time bucket; ``starts`` are epoch seconds of each bucket."""

    bucket: int
    starts: list[float]
    values: dict[str, list[float | None]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not any(v for values in self.values.values() for v in values if v)


def _starts(since: float, until: float, bucket: int) -> list[float]:
    first = math.floor(since / bucket) * bucket
    n = int(math.floor(until / bucket) * bucket - first) // bucket + 1
    return [first + i * bucket for i in range(max(n, 1))]


def busy_per_second(conn: sqlite3.Connection, since: float, until: float, bucket: int) -> Series:
    """Busy errors per second in each bucket, one series per classification."""
    starts = _starts(since, until, bucket)
    first = starts[0]
    series = Series(bucket, starts, {c: [0.0] * len(starts) for c in events.CLASSIFICATIONS})
    rows = conn.execute(
        "SELECT CAST((ts - ?) / ? AS INTEGER) AS b, COALESCE(classification, 'other') AS c,"
        f" count(*) AS n FROM events WHERE kind = 'busy' AND {IN_WINDOW}"
        " GROUP BY b, c",
        (first, bucket, since, until),
    )
    for b, c, n in rows:
        if 0 <= b < len(starts):
            series.values.setdefault(c, [0.0] * len(starts))[b] += n / bucket
    return series


def wait_percentiles(
    conn: sqlite3.Connection, since: float, until: float, bucket: int, cap: int = 200_000
) -> Series:
    """p50, p95 and max wait (ms) and the wait count in each bucket.

    SQLite has no percentile function, so wait times are read in bucket order
    and ranked here; past ``cap`` waits every k-th one is kept, which keeps the
    percentiles close while the max and count stay exact (computed in SQL).
    """
    starts = _starts(since, until, bucket)
    first = starts[0]
    n = len(starts)
    args = (first, bucket, since, until)
    exact = conn.execute(
        "SELECT CAST((ts - ?) / ? AS INTEGER) AS b, count(*), max(wait_ms) FROM events"
        f" WHERE kind = 'wait' AND {IN_WINDOW} GROUP BY b",
        args,
    ).fetchall()
    total = sum(r[1] for r in exact)
    step = max(1, math.ceil(total / cap))
    sample = "" if step == 1 else f" AND id % {step} = 0"
    per: dict[int, list[float]] = defaultdict(list)
    for b, ms in conn.execute(
        "SELECT CAST((ts - ?) / ? AS INTEGER) AS b, wait_ms FROM events"
        f" WHERE kind = 'wait' AND {IN_WINDOW} AND wait_ms IS NOT NULL{sample}",
        args,
    ):
        per[b].append(ms)
    out = Series(bucket, starts, {k: [None] * n for k in ("p50", "p95", "max", "count")})
    for b, count, worst in exact:
        if not 0 <= b < n:
            continue
        values = sorted(per.get(b, ()))
        out.values["count"][b] = float(count)
        out.values["max"][b] = worst
        out.values["p50"][b] = percentile(values, 50) if values else worst
        out.values["p95"][b] = percentile(values, 95) if values else worst
    for b in range(n):
        if out.values["count"][b] is None:
            out.values["count"][b] = 0.0
    return out


# -- durations -------------------------------------------------------------------

EDGES = rollup.EDGES  # one definition of the bins, shared with the store's rollup
_bin_case = rollup.bin_case


@dataclass(frozen=True)
class Histogram:
    edges: tuple[float, ...]  # bin i is [edges[i-1], edges[i]); the last is open-ended
    durations: list[int]  # transaction durations
    holds: list[int]  # write-lock holds (transactions and autocommit writes)

    @property
    def empty(self) -> bool:
        return not (any(self.durations) or any(self.holds))

    def labels(self) -> list[str]:
        """Short axis labels: each bin by its lower edge."""
        return [f"<{_ms(self.edges[0])}"] + [_ms(e) for e in self.edges]

    def ranges(self) -> list[str]:
        """The full range of each bin, for hover text."""
        out = [f"under {_ms(self.edges[0])}"]
        out += [f"{_ms(a)} to {_ms(b)}" for a, b in zip(self.edges, self.edges[1:], strict=False)]
        out.append(f"{_ms(self.edges[-1])} or more")
        return out


def _ms(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}s"
    if value < 1:
        return f"{value * 1000:g}µs"
    return f"{value:g}ms"


def durations(conn: sqlite3.Connection, since: float, until: float) -> Histogram:
    long = rollup.long_window(conn, since, until)
    if long is not None:
        hists = rollup.histograms(conn, *long, (rollup.DURATION, rollup.TXN, rollup.WRITE), False)
        empty = rollup.Hist()
        holds = rollup.by_site(hists, (rollup.TXN, rollup.WRITE), "").get("", empty)
        return Histogram(EDGES, hists.get((rollup.DURATION, ""), empty).n, holds.n)

    def counts(sql: str) -> list[int]:
        out = [0] * (len(EDGES) + 1)
        for b, n in conn.execute(sql, (since, until)):
            out[b] += n
        return out

    duration_bins = counts(
        f"SELECT {_bin_case('duration_ms')} AS b, count(*) FROM events"
        f" WHERE kind = 'transaction' AND {IN_WINDOW} AND duration_ms IS NOT NULL"
        " GROUP BY b"
    )
    hold_bins = counts(
        f"SELECT {_bin_case('hold_ms')} AS b, count(*) FROM events"
        f" WHERE {HOLD} AND {IN_WINDOW} GROUP BY b"
    )
    # The quiet writes (lockwatch.pipeline.quiet): stored by bin, not as events.
    names = (rollup.DURATION, rollup.TXN, rollup.WRITE)
    for (series, _), hist in rollup.quiet_histograms(conn, since, until, names, False).items():
        into = duration_bins if series == rollup.DURATION else hold_bins
        for b, n in enumerate(hist.n):
            into[b] += n
    return Histogram(EDGES, duration_bins, hold_bins)


def slowest(
    conn: sqlite3.Connection, since: float, until: float, limit: int = 10
) -> list[dict[str, Any]]:
    """The slowest transactions in the window, by wall time."""
    rows = conn.execute(
        f"SELECT {COLS} FROM events WHERE kind = 'transaction' AND {IN_WINDOW}"
        " AND duration_ms IS NOT NULL ORDER BY duration_ms DESC LIMIT ?",
        (since, until, limit),
    )
    return [payload(r) for r in rows]


# -- the write-lock timeline -----------------------------------------------------


@dataclass
class Timeline:
    holds: list[dict[str, Any]]  # with start (epoch s) and hold_ms
    marks: list[dict[str, Any]]  # waits and busy errors, with at (epoch s)
    lanes: list[tuple[int, str]]  # (pid, thread), sorted
    contexts: dict[tuple[int, str], str]  # what each lane is, for its label
    holds_cut: bool  # more holds in the window than shown (the longest are kept)
    marks_cut: bool  # more waits and busy errors than shown (the newest are kept)

    @property
    def empty(self) -> bool:
        return not (self.holds or self.marks)

    def cut(self, holds: int, marks: int) -> Timeline:
        """The longest ``holds`` holds and the newest ``marks`` marks (to fit a size)."""
        kept_holds, kept_marks = self.holds[:holds], self.marks[:marks]
        lanes, contexts = _lanes(kept_holds, kept_marks)
        return Timeline(
            kept_holds, kept_marks, lanes, contexts,
            self.holds_cut or holds < len(self.holds), self.marks_cut or marks < len(self.marks),
        )  # fmt: skip


def _lanes(
    holds: list[dict[str, Any]], marks: list[dict[str, Any]]
) -> tuple[list[tuple[int, str]], dict[tuple[int, str], str]]:
    """The lanes (pid, thread), sorted, and what each one is (its main context)."""
    seen: dict[tuple[int, str], Counter[str]] = defaultdict(Counter)
    for item in holds + marks:
        seen[(item["pid"] or 0, item["thread"] or "?")][lane_kind(item["context"])] += 1
    # A blocker's lane is drawn even when its hold fell outside the cut.
    for m in marks:
        if m["blocker_pid"]:
            key = (m["blocker_pid"], m["blocker_thread"] or "?")
            seen[key][lane_kind(m["blocker_context"])] += 1
    return sorted(seen), {key: _main(kinds) for key, kinds in seen.items()}


def timeline(
    conn: sqlite3.Connection,
    since: float,
    until: float,
    max_holds: int = 1000,
    max_marks: int = 1000,
    sql_preview: int = 120,
) -> Timeline:
    """Hold intervals and wait/busy markers, cut to the longest holds and newest marks."""
    holds = [
        dict(r)
        for r in conn.execute(
            f"SELECT {COLS}, {HOLD_START} AS start, {HOLD_SITE} AS site,"
            " COALESCE(lock_sql, sql) AS lock_statement FROM events WHERE id IN"
            # The longest holds' ids from the covering (kind, ts, hold_ms) index first:
            # only those rows are read, not every hold of a long window.
            f" (SELECT id FROM events WHERE {HOLD} AND {IN_WINDOW}"
            " ORDER BY hold_ms DESC LIMIT ?) ORDER BY hold_ms DESC",
            (since, until, max_holds),
        )
    ]
    marks = [
        dict(r)
        for r in conn.execute(
            f"SELECT {COLS}, ts + COALESCE(duration_ms, wait_ms, 0) / 1000.0 AS at FROM events"
            f" WHERE kind IN ('busy', 'wait') AND {IN_WINDOW} ORDER BY ts DESC LIMIT ?",
            (since, until, max_marks),
        )
    ]
    lanes, contexts = _lanes(holds, marks)
    # Hover text only: keep the figure small.
    for item in holds + marks:
        for key in ("sql", "lock_statement"):
            if item.get(key) and len(item[key]) > sql_preview:
                item[key] = item[key][:sql_preview] + "…"
    return Timeline(holds, marks, lanes, contexts, len(holds) >= max_holds, len(marks) >= max_marks)


def lane_kind(context: str | None) -> str:
    """What a lane is: ``request`` (a worker serves many paths), else the context itself
    (``command:restock``, ``program:gunicorn``, ``test:...``, ``outside``)."""
    if not context:
        return ""
    return "request" if context.startswith("request:") else context


def _main(kinds: Counter[str]) -> str:
    """The lane's most frequent kind, known ones before unknown."""
    known = [(n, k) for k, n in kinds.items() if k]
    return max(known)[1] if known else ""


# -- call sites ----------------------------------------------------------------


@dataclass
class CallSite:
    site: str
    hold_ms: float = 0.0
    holds: int = 0
    p95_hold_ms: float | None = None
    # Over a window longer than an hour the p95 is estimated from the rollup's 1-2-5
    # histogram: within the bin of the exact value, e.g. between 1 and 2 s.
    p95_estimated: bool = False
    waits_caused: int = 0
    busy_caused: int = 0
    busy_suffered: int = 0


def call_sites(
    conn: sqlite3.Connection,
    since: float,
    until: float,
    sort: str = "hold_ms",
    descending: bool = True,
    limit: int = 25,
) -> list[CallSite]:
    """Per call site: hold time, waits and busy errors caused as the blocker, busy suffered."""
    sites: dict[str, CallSite] = {}

    def get(site: str | None) -> CallSite:
        key = site or events.UNKNOWN
        if key not in sites:
            sites[key] = CallSite(key)
        return sites[key]

    window = (since, until)
    long = rollup.long_window(conn, since, until)
    if long is None:
        holds: dict[str, list[float]] = defaultdict(list)
        for site, ms in conn.execute(
            f"SELECT {HOLD_SITE}, hold_ms FROM events WHERE {HOLD} AND {IN_WINDOW}",
            window,
        ):
            holds[site or events.UNKNOWN].append(ms)
        series = (rollup.TXN, rollup.WRITE)
        quiet = rollup.by_site(
            rollup.quiet_histograms(conn, since, until, series), series, events.UNKNOWN
        )
        for site in holds.keys() | quiet.keys():
            values = sorted(holds.get(site, ()))
            cs = get(site)
            cs.holds, cs.hold_ms, cs.p95_hold_ms, cs.p95_estimated = rollup.summary(
                values, quiet.get(site)
            )
    else:
        series = (rollup.TXN, rollup.WRITE)  # transactions' and autocommit writes' holds
        hists = rollup.histograms(conn, *long, series)
        for site, hist in rollup.by_site(hists, series, events.UNKNOWN).items():
            cs = get(site)
            cs.holds = hist.count
            cs.hold_ms = hist.sum_ms
            cs.p95_hold_ms = hist.quantile(rollup.nearest_rank(hist.count, 95))
            cs.p95_estimated = True
    # Waits and busy errors through their covering index (rollup.WAITS).
    for site, n in conn.execute(
        f"SELECT blocker_call_site, count(*) FROM events WHERE {rollup.WAITS}"
        f" AND kind = 'wait' AND {IN_WINDOW} GROUP BY blocker_call_site",
        window,
    ):
        if site is not None:  # else not attributed yet
            get(site).waits_caused += n
    for blocker, site, n in conn.execute(
        f"SELECT blocker_call_site, call_site, count(*) FROM events WHERE {rollup.WAITS}"
        f" AND kind = 'busy' AND {IN_WINDOW} GROUP BY blocker_call_site, call_site",
        window,
    ):
        if blocker is not None:
            get(blocker).busy_caused += n
        if site is not None:
            get(site).busy_suffered += n

    def key(cs: CallSite) -> Any:
        value = getattr(cs, sort)
        if sort == "site":
            return value
        return (value if value is not None else -1.0, cs.site)

    return sorted(sites.values(), key=key, reverse=descending)[:limit]


# -- the events table and one event ----------------------------------------------


def page(
    conn: sqlite3.Connection, filters: Filters, number: int, size: int, count_cap: int = 10_000
) -> tuple[list[dict[str, Any]], int, bool]:
    """One page of events, newest first; the count stops at count_cap (returns capped=True)."""
    where, args = filters.where()
    clause = f" WHERE {where}" if where else ""
    rows = conn.execute(
        # By ts, not id: the ts indexes then give the order without a sort.
        f"SELECT {COLS} FROM events{clause} ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?",
        (*args, size, (number - 1) * size),
    ).fetchall()
    (count,) = conn.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM events{clause} LIMIT ?)", (*args, count_cap + 1)
    ).fetchone()
    return [payload(r) for r in rows], min(int(count), count_cap), count > count_cap


# -- the live path ---------------------------------------------------------------


def last_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(max(id), 0) FROM events").fetchone()[0])


def since_id(conn: sqlite3.Connection, after: int, limit: int) -> list[sqlite3.Row]:
    return conn.execute(
        f"SELECT {COLS} FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
    ).fetchall()
