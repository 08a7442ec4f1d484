"""The doctor: what to change, from the evidence in the store.

Every number in a finding is computed from the store's events. Findings are
ranked by impact: an estimate of the time the app lost (failed requests count
as the time they waited, plus a second each for the retry a user makes).

Over a window whose events span more than an hour, hold times come from the
store's rollup (``lockwatch.rollup``): counts and totals exact, a p95 hold
estimated within its 1-2-5 bin and shown with "≈". LONG_HOLD_P95_MS is a bin
edge, so whether a p95 reaches it is still decided exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import events, rollup
from .filters import Filters

FAILED_REQUEST_COST_MS = 1000.0
# Waits below these are the normal hand-off of a busy but healthy database.
HIDDEN_WAIT_TOTAL_MS = 1000.0
HIDDEN_WAIT_P95_MS = 100.0
LONG_HOLD_P95_MS = 1000.0
# A blocker whose p95 hold is under this did not make anyone wait long: the wait was
# SQLite's busy handler, which sleeps between tries (up to 100 ms each).
SHORT_HOLD_P95_MS = 5.0
# Busy errors at one call site, in one thread, this close together are one statement retried.
RETRY_GAP_S = 2.0
# Busy errors whose context (endpoint, command, test) is read: the newest this many.
CONTEXT_SAMPLE = 2000
_WAITS = rollup.WAITS  # waits and busy errors: their covering index's own WHERE


@dataclass(frozen=True)
class Finding:
    code: str
    title: str
    evidence: str
    change: str
    impact_ms: float
    call_site: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    # Harm: failed (busy errors, failed requests) ranks before waits that succeeded.
    failed: bool = False
    last_ts: float | None = None  # the newest event of its evidence

    def text(self) -> str:
        return f"{self.title}: {self.change}"


def _rank(count: int) -> int:
    """The (1-based) rank of the p95 among count values: nearest rank, as on the dashboard."""
    return rollup.nearest_rank(count, 95)


def _p95(values: list[float]) -> float:
    if not values:
        return 0.0
    return sorted(values)[_rank(len(values)) - 1]


def _count(n: int, noun: str) -> str:
    """ "1 transaction", "2 transactions"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _seconds(ms: float) -> str:
    return f"{ms / 1000.0:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


@dataclass(frozen=True)
class _Times:
    """One call site's hold (or wait) times in the window."""

    count: int = 0
    total_ms: float = 0.0
    p95_ms: float = 0.0
    estimated: bool = False  # p95 from a 1-2-5 histogram (a window over an hour)

    @classmethod
    def exact(cls, values: list[float]) -> _Times:
        return cls(len(values), sum(values), _p95(values))

    @classmethod
    def binned(cls, hist: rollup.Hist) -> _Times:
        return cls(hist.count, hist.sum_ms, hist.quantile(_rank(hist.count)) or 0.0, True)

    def p95(self) -> str:
        """The p95 as text; "≈" marks an estimate."""
        return f"{'≈ ' if self.estimated else ''}{_seconds(self.p95_ms)}"


class _Evidence:
    def __init__(self, conn: sqlite3.Connection, since: float | None, until: float | None) -> None:
        self.conn = conn
        self.since, self.until = since, until
        clause, self.args = Filters(since=since, until=until).where()
        self.where = f" AND {clause}" if clause else ""
        self._holds: tuple[dict[str, _Times], dict[str, _Times]] | None = None
        self.retried: list[int] = []  # busy errors told as retries, not again on their own
        self._busy: list[dict[str, Any]] | None = None

    def busy(self) -> list[dict[str, Any]]:
        """The window's busy errors (less those told as retries) by classification, call
        site and context. Counts are exact, from the waits index; the contexts (a table
        read per row) are those of the newest CONTEXT_SAMPLE errors, the rest counted
        under the context most of those had at the same call site."""
        if self._busy is None:
            counts = self.all(
                "SELECT classification, call_site, count(*) AS n, max(ts) AS last FROM events"
                f" WHERE {_WAITS} AND kind = 'busy' AND {_NOT_RETRIED}{{w}}"
                " GROUP BY classification, call_site",
                json.dumps(self.retried),
            )
            sampled: dict[tuple[Any, Any], Counter[str]] = defaultdict(Counter)
            for r in self.all(
                "SELECT classification, call_site, context, count(*) AS n FROM events"
                f" WHERE id IN (SELECT id FROM events WHERE {_WAITS} AND kind = 'busy'"
                f" AND {_NOT_RETRIED}{{w}} ORDER BY ts DESC LIMIT {CONTEXT_SAMPLE})"
                " GROUP BY classification, call_site, context",
                json.dumps(self.retried),
            ):
                sampled[(r["classification"], r["call_site"])][r["context"] or ""] += r["n"]
            self._busy = []
            for r in counts:
                contexts = sampled.get((r["classification"], r["call_site"]))
                rest = r["n"] - sum(contexts.values()) if contexts else r["n"]
                top = contexts.most_common(1)[0][0] if contexts else ""
                for context, n in (contexts or Counter()).items():
                    self._busy.append(
                        {**dict(r), "context": context, "n": n + (rest if context == top else 0)}
                    )
                if not contexts:
                    self._busy.append({**dict(r), "context": ""})
        return self._busy

    @functools.cached_property
    def timeouts(self) -> list[sqlite3.Row]:
        """The timeouts (less retries), by call site, context and blocker."""
        return self.all(
            "SELECT call_site, context, blocker_call_site, blocker_context, blocker_thread,"
            " coalesce(blocker_same_thread, 0) AS same, count(*) AS n,"
            " coalesce(sum(wait_ms), 0) AS waited, max(ts) AS last,"
            f" coalesce(sum({_TEST_TRANSACTION}), 0) AS in_tests FROM events"
            f" WHERE id IN (SELECT id FROM events WHERE {_WAITS} AND kind = 'busy'"
            f" AND classification = 'timeout' AND {_NOT_RETRIED}{{w}}) GROUP BY call_site,"
            " context, blocker_call_site, blocker_context, blocker_thread, same",
            json.dumps(self.retried),
        )

    def all(self, sql: str, *lead: Any) -> list[sqlite3.Row]:
        """Rows of ``sql``; its ``{w}`` takes the time window, after the ``lead`` args."""
        return self.conn.execute(sql.format(w=self.where), (*lead, *self.args)).fetchall()

    def tuples(self, sql: str, *lead: Any) -> list[tuple[Any, ...]]:
        """As ``all``, as plain tuples: for many rows, a Row each costs twice the time."""
        cur = self.conn.cursor()
        cur.row_factory = None
        return cur.execute(sql.format(w=self.where), (*lead, *self.args)).fetchall()

    @functools.cached_property
    def long(self) -> tuple[float, float] | None:
        """The window's first and last event when they span over an hour (p95s are then
        estimated from histograms), else None (everything exact, from the events)."""
        return rollup.long_window(self.conn, self.since, self.until)

    def holds(self, transactions_only: bool = False) -> dict[str, _Times]:
        """Per call site where the lock was taken (as a blocker is named): every hold
        (transactions and autocommit writes), or the transactions' only."""
        if self._holds is None:
            long = self.long
            self._holds = self._exact_holds() if long is None else self._rollup_holds(long)
        return self._holds[transactions_only]

    def _exact_holds(self) -> tuple[dict[str, _Times], dict[str, _Times]]:
        # One pass over the window for every call site, not one scan per site.
        every: dict[str, list[float]] = {}
        txn: dict[str, list[float]] = {}
        for is_txn, site, ms in self.tuples(
            f"SELECT kind = 'transaction', {rollup.HOLD_SITE}, hold_ms FROM events"
            " WHERE kind IN ('transaction', 'query') AND hold_ms IS NOT NULL{w}"
        ):
            every.setdefault(site or "unknown", []).append(ms)
            if is_txn:
                txn.setdefault(site or "unknown", []).append(ms)

        def summary(by_site: dict[str, list[float]]) -> dict[str, _Times]:
            return {site: _Times.exact(v) for site, v in by_site.items()}

        return summary(every), summary(txn)

    def _rollup_holds(
        self, long: tuple[float, float]
    ) -> tuple[dict[str, _Times], dict[str, _Times]]:
        holds = (rollup.TXN, rollup.WRITE)
        hists = rollup.histograms(self.conn, *long, holds)

        def summary(names: tuple[str, ...]) -> dict[str, _Times]:
            return {
                site: _Times.binned(h)
                for site, h in rollup.by_site(hists, names, "unknown").items()
            }

        return summary(holds), summary((rollup.TXN,))


def findings(
    conn: sqlite3.Connection, since: float | None = None, until: float | None = None
) -> list[Finding]:
    conn.row_factory = sqlite3.Row
    ev = _Evidence(conn, since, until)
    out: list[Finding] = []
    out += _retries(ev)  # first: the busy errors it tells are not told again
    out += _same_thread(ev)
    out += _test_isolation(ev)
    out += _upgrades(ev)
    out += _timeouts(ev)
    out += _snapshots(ev)
    out += _wal(ev)
    out += _locked(ev)
    out += _hidden_waits(ev)
    out += _long_holds(ev, {f.call_site for f in out})
    out += _health(conn)
    return _ranked(out, since)


# Evidence that stopped this long before the window's newest (or a quarter of the window,
# if more) is old: from before a fix, perhaps.
OLD_EVIDENCE_S = 900.0


def _ranked(found: list[Finding], since: float | None) -> list[Finding]:
    """Harm first: failed statements and requests, then waits that succeeded; each by the
    time lost. Old evidence comes last, labelled with when it was last seen, or is left out
    when newer evidence of the same kind says something else."""
    dated = [f.last_ts for f in found if f.last_ts is not None]
    if not dated:
        return sorted(found, key=lambda f: (not f.failed, -f.impact_ms))
    newest = max(dated)
    first = since if since is not None else min(dated)
    cutoff = newest - max(OLD_EVIDENCE_S, (newest - first) / 4)
    current = [f for f in found if f.last_ts is None or f.last_ts >= cutoff]
    now = {f.code for f in current}
    old = [
        dataclasses.replace(f, title=f"{f.title} (last seen {_when(f.last_ts)}, not since)")
        for f in found
        if f.last_ts is not None and f.last_ts < cutoff and f.code not in now
    ]
    harm = lambda f: (not f.failed, -f.impact_ms)  # noqa: E731
    return sorted(current, key=harm) + sorted(old, key=harm)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts or 0.0, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _by_call_site(ev: _Evidence, classification: str, evidence: str, change: str) -> list[Finding]:
    sites: dict[str, list[Any]] = defaultdict(list)
    for r in ev.busy():
        if r["classification"] != classification:
            continue
        sites[r["call_site"] or "unknown"].append(r)
    wheres = _where(ev, sites)
    out = []
    for site, rows in sites.items():
        n, where = sum(r["n"] for r in rows), wheres[site]
        if where.failed:
            of = f" of {_count(where.requests, 'request')}" if where.requests else " requests"
            title = f"{where.name}: {where.failed}{of} failed with `{classification}` at `{site}`"
        else:
            title = f"{_count(n, f'`{classification}` busy error')} at `{site}`{where.at}"
        out.append(
            Finding(
                code=classification,
                title=title,
                evidence=evidence,
                change=change,
                impact_ms=n * FAILED_REQUEST_COST_MS,
                call_site=site,
                failed=True,
                last_ts=max(r["last"] for r in rows),
                figures={"busy": n, "failed_requests": where.failed},
            )
        )
    return sorted(out, key=lambda f: -f.impact_ms)


@dataclass(frozen=True)
class _Where:
    """The endpoint, command or test most of a finding's busy errors came from."""

    context: str = ""
    requests: int = 0  # that endpoint's requests in the window (0: not counted)
    failed: int = 0  # of them, those that failed (status 500 or more)

    @property
    def name(self) -> str:
        return self.context.removeprefix("request:")

    @property
    def at(self) -> str:
        return _in(self.context)


def _where(ev: _Evidence, groups: dict[str, list[Any]]) -> dict[str, _Where]:
    """Per group of (context, n) rows: where most of them came from. For an endpoint, its
    requests and failed requests in the window, from one pass over the window's requests
    (over a long window, the failed requests only: the requests that had these errors)."""
    tops = {}
    for key, rows in groups.items():
        by_context: defaultdict[str, int] = defaultdict(int)
        for r in rows:
            by_context[r["context"] or ""] += r["n"]
        tops[key] = max(by_context, key=lambda c: by_context[c])
    endpoints = sorted({c for c in tops.values() if c.startswith("request:")})
    counts: dict[str, tuple[int, int]] = {}
    if endpoints and ev.long is None:
        for r in ev.all(
            "SELECT context, count(*) AS n, coalesce(sum(status >= 500), 0) AS failed"
            " FROM events WHERE kind = 'request' AND context IN (SELECT value FROM"
            " json_each(?)){w} GROUP BY context",
            json.dumps(endpoints),
        ):
            counts[r["context"]] = (r["n"], r["failed"])
    return {site: _Where(c, *counts.get(c, (0, 0))) for site, c in tops.items()}


# Held by a test's main thread: pytest-django's transaction around a django_db test (an
# atomic() there is a savepoint inside it); threads a test starts have their own connections.
_TEST_TRANSACTION = "blocker_context LIKE 'test:%' AND blocker_thread = 'MainThread'"
TEST_ADVICE = (
    "in a test: mark it @pytest.mark.django_db(transaction=True), or give the second client "
    "Django's own connection (then it can commit the test's transaction, as pandas does, "
    "and the test's changes outlive it)"
)


def _same_thread(ev: _Evidence) -> list[Finding]:
    """Waits behind the waiter's own thread, on another connection: they cannot succeed."""
    out = []
    # Waiting cannot succeed: it ends in a timeout.
    same = [r for r in ev.timeouts if r["same"]]
    for r in sorted(same, key=lambda r: -r["n"]):
        site, holder = r["call_site"] or "unknown", r["blocker_call_site"] or "unknown"
        context = r["context"] or ""
        what = _count(r["n"], "busy error")
        evidence = (
            f"the holder is the waiter's own thread, on another connection: it cannot let go "
            f"while that thread waits, so waiting cannot succeed ({_seconds(r['waited'])} waited)"
        )
        test = r["blocker_thread"] == "MainThread" and context.startswith("test:")
        if test and r["blocker_context"] == context:
            out.append(
                Finding(
                    code="test-transaction",
                    title=(
                        f"`{context[5:]}`: {what} at `{site}`, blocked by the test's own "
                        f"transaction, which took the write lock at `{holder}`"
                    ),
                    evidence=evidence,
                    change=TEST_ADVICE,
                    impact_ms=r["waited"] + r["n"] * FAILED_REQUEST_COST_MS,
                    call_site=site,
                    failed=True,
                    last_ts=r["last"],
                    figures={"busy": r["n"], "waited_ms": r["waited"]},
                )
            )
            continue
        out.append(
            Finding(
                code="same-thread",
                title=(
                    f"{what} at `{site}`{_in(context)}: two connections in one thread; the "
                    f"other one holds the write lock, taken at `{holder}`"
                ),
                evidence=evidence,
                change="use one connection for both, or commit before opening the second",
                impact_ms=r["waited"] + r["n"] * FAILED_REQUEST_COST_MS,
                call_site=site,
                failed=True,
                last_ts=r["last"],
                figures={"busy": r["n"], "waited_ms": r["waited"]},
            )
        )
    return out


def _test_isolation(ev: _Evidence) -> list[Finding]:
    """A django_db test's transaction (begun by pytest-django, outside your code, on the
    test's main thread) that ended in COMMIT: pytest-django rolls it back, so something
    committed Django's connection, e.g. a client given it (pandas' to_sql commits)."""
    out: list[Finding] = []
    try:  # only a store with test processes: a production store's transactions are not read
        tests = ev.conn.execute(
            "SELECT 1 FROM processes WHERE program LIKE 'test:%' OR program LIKE '%pytest%'"
        ).fetchone()
    except sqlite3.Error:
        tests = True
    if not tests:
        return out
    for r in ev.all(
        "SELECT context, ts, pid, thread_id, duration_ms, lock_call_site FROM events"
        " WHERE kind = 'transaction' AND context LIKE 'test:%' AND context != 'test:setup'"
        " AND thread = 'MainThread' AND call_site IS NULL AND \"end\" = 'commit'{w}"
        " ORDER BY ts"
    ):
        by = ev.conn.execute(  # the COMMIT's own line, where statements were captured
            "SELECT call_site FROM events WHERE kind = 'query' AND stmt_class = 'commit'"
            " AND pid = ? AND thread_id IS ? AND ts >= ? AND ts <= ? ORDER BY ts DESC LIMIT 1",
            (r["pid"], r["thread_id"], r["ts"], r["ts"] + (r["duration_ms"] or 0) / 1000 + 1e-3),
        ).fetchone()
        committed = f" by `{by[0]}`" if by and by[0] else ""
        took = (
            f", which took the write lock at `{r['lock_call_site']}`,"
            if r["lock_call_site"]
            else ""
        )
        out.append(
            Finding(
                code="test-isolation",
                title=(
                    f"`{r['context'][5:]}`: test isolation was broken: the test's django_db "
                    f"transaction{took} was committed{committed}"
                ),
                evidence=(
                    "pytest-django rolls that transaction back after the test; it ended in "
                    "COMMIT, so the test's changes outlive it"
                ),
                change=(
                    "do not commit Django's connection inside a django_db test: a client given "
                    "it commits the test's transaction (pandas' to_sql does); give that test "
                    "@pytest.mark.django_db(transaction=True)"
                ),
                impact_ms=FAILED_REQUEST_COST_MS,
                call_site=r["lock_call_site"],
                failed=True,
                last_ts=r["ts"],
            )
        )
    return out


def _in(context: str | None) -> str:
    """ " in POST /orders/", " in command:import": where a finding happened."""
    if not context:
        return ""
    if context.startswith("request:"):
        return f" in {context[len('request:') :]}"
    return f" in {context}"


_NOT_RETRIED = "id NOT IN (SELECT value FROM json_each(?))"


@dataclass
class _Run:
    """One statement's tries: busy errors close together, then a success or not."""

    ids: list[int]
    start: float
    end: float
    waited_ms: float
    blocker: str
    last: float = 0.0  # the last busy error's start: its own query event has the same ts
    succeeded: bool = False


def _retries(ev: _Evidence) -> list[Finding]:
    """Busy errors at one call site, in one thread and request (or command, or test), in
    quick succession, ending in a success or a last failure: one statement retried, one
    story. A lone busy error is no retry story: the next request at the same line is not."""
    runs: dict[tuple[str, str], list[_Run]] = defaultdict(list)
    key: tuple[Any, ...] | None = None
    run: _Run | None = None
    candidates: list[tuple[tuple[Any, ...], _Run]] = []
    # Only busy errors with another of the same statement within RETRY_GAP_S, by SQL's
    # window functions: most busy errors are alone, and Python never sees them.
    # Two steps: which busy errors have another at their call site within the gap (read
    # from the waits index alone), then those only, by thread and request (from the table).
    near: list[int] = []
    previous: tuple[Any, float, int] | None = None  # call site, end, id
    for id_, ts, wait, site in ev.tuples(
        f"SELECT id, ts, wait_ms, call_site FROM events WHERE {_WAITS} AND kind = 'busy'{{w}}"
        " ORDER BY call_site, ts"
    ):
        if previous is not None and previous[0] == site and ts - previous[1] < RETRY_GAP_S + 1.0:
            if not near or near[-1] != previous[2]:
                near.append(previous[2])
            near.append(id_)
        previous = (site, ts + (wait or 0.0) / 1000.0, id_)
    if not near:
        return []
    cur = ev.conn.cursor()
    cur.row_factory = None  # the window is in the ids already
    for id_, ts, end, wait, site, context, pid, thread, _request, blocker in cur.execute(
        "SELECT id, ts, done, wait_ms, call_site, context, pid, thread_id, request_id,"
        " blocker_call_site FROM (SELECT *, lag(done) OVER w AS before, lead(ts) OVER w AS after"
        " FROM (SELECT id, ts, ts + coalesce(duration_ms, wait_ms, 0) / 1000.0 AS done,"
        " wait_ms, call_site, context, pid, thread_id, request_id, blocker_call_site"
        " FROM events WHERE id IN (SELECT value FROM json_each(?))"
        " AND NOT coalesce(blocker_same_thread, 0))"
        " WINDOW w AS (PARTITION BY pid, thread_id, call_site, context, request_id ORDER BY ts))"
        f" WHERE ts - before < {RETRY_GAP_S!r} OR after - done < {RETRY_GAP_S!r}"
        " ORDER BY pid, thread_id, call_site, context, request_id, ts",
        (json.dumps(near),),
    ):
        this = (pid, thread, site, context, _request)
        if run is not None and this == key and ts - run.end < RETRY_GAP_S:
            run.ids.append(id_)
            run.end, run.last, run.waited_ms = end, ts, run.waited_ms + (wait or 0.0)
            continue
        key, run = this, _Run([id_], ts, end, wait or 0.0, blocker or "unknown", ts)
        candidates.append((this, run))
    for (pid, thread, site, context, request), run in candidates:
        # A success: the same statement got the lock (after a wait, or at once) soon after.
        ok = ev.conn.execute(
            "SELECT ts + coalesce(duration_ms, wait_ms, 0) / 1000.0 AS done, wait_ms FROM"
            " events WHERE ts > ? AND ts < ? AND pid = ? AND thread_id IS ?"
            " AND request_id IS ? AND ((kind IN ('query', 'wait') AND call_site IS ?"
            " AND coalesce(outcome, '') != 'gave_up') OR (kind = 'transaction'"
            " AND lock_call_site IS ?)) ORDER BY ts LIMIT 1",
            (run.last, run.end + RETRY_GAP_S, pid, thread, request, site, site),
        ).fetchone()
        if ok is not None:
            run.succeeded, run.end = True, max(run.end, ok[0])
            run.waited_ms += ok[1] or 0.0
        if len(run.ids) > 1:
            runs[(site or "unknown", context or "")].append(run)
    out = []
    for (site, context), story in runs.items():
        ev.retried += [i for r in story for i in r.ids]
        tries = sum(len(r.ids) + r.succeeded for r in story)
        failed = sum(not r.succeeded for r in story)
        waited = sum(r.waited_ms for r in story)
        blocker = max(story, key=lambda r: len(r.ids)).blocker
        behind = "another program" if blocker in _NOT_A_SITE else f"`{blocker}`"
        if len(story) == 1:
            (r,) = story
            title = (
                f"{tries} tries over {_seconds((r.end - r.start) * 1000)} at `{site}`"
                f"{_in(context)} behind {behind}, the last "
                + ("succeeded" if r.succeeded else "failed")
            )
        else:
            title = (
                f"{len(story)} statements retried at `{site}`{_in(context)} behind {behind}: "
                f"{tries} tries, {len(story) - failed} of {len(story)} succeeded in the end"
            )
        out.append(
            Finding(
                code="retries",
                title=title,
                evidence=(
                    f"each busy error was retried within {RETRY_GAP_S:.0f} s; they waited "
                    f"{_seconds(waited)} in total"
                ),
                change=(
                    "a retry waits again behind the same holder: shorten what holds the lock, "
                    "or raise the timeout instead of retrying"
                ),
                impact_ms=waited + failed * FAILED_REQUEST_COST_MS,
                call_site=site,
                failed=True,
                last_ts=max(r.end for r in story),
                figures={
                    "runs": len(story),
                    "tries": tries,
                    "failed": failed,
                    "waited_ms": waited,
                    "span_ms": max((r.end - r.start) * 1000 for r in story),
                },
            )
        )
    return out


def _upgrades(ev: _Evidence) -> list[Finding]:
    return _by_call_site(
        ev,
        "upgrade",
        "a deferred transaction read, then tried to write while another connection held the "
        "write lock; SQLite fails it at once, without waiting",
        'set "transaction_mode": "IMMEDIATE" in OPTIONS, or write first',
    )


_NOT_A_SITE = (None, events.UNKNOWN, events.OUTSIDE, events.READERS, events.WAL_READ)
# The waits WAL removes: a read behind an instrumented writer (under WAL a reader never
# waits for a writer, so this is the rollback journal), and a COMMIT waiting for readers.
_WAL_REMOVES = (
    "stmt_class = 'commit' OR (stmt_class = 'read' AND blocker_context IS NOT NULL"
    " AND blocker_context NOT IN ('outside', 'unknown', 'readers', 'wal-read'))"
)


def _timeouts(ev: _Evidence) -> list[Finding]:
    grouped = [r for r in ev.timeouts if not r["same"]]
    if not grouped:
        return []
    by_blocker: dict[Any, dict[str, Any]] = {}
    for g in grouped:
        b = by_blocker.setdefault(
            g["blocker_call_site"],
            {"blocker_call_site": g["blocker_call_site"], "n": 0, "waited": 0.0, "in_tests": 0},
        )
        b["n"] += g["n"]
        b["waited"] += g["waited"] or 0.0
        b["in_tests"] += g["in_tests"]
    rows = sorted(by_blocker.values(), key=lambda b: -b["n"])
    total = sum(r["n"] for r in rows)
    waited = sum(r["waited"] or 0.0 for r in rows)
    last = max(g["last"] for g in grouped)
    where = _where(ev, {"": list(grouped)})[""]
    errors = _count(total, "`timeout` busy error") + where.at
    if where.failed:
        of = f" of {_count(where.requests, 'request')}" if where.requests else " requests"
        errors = f"{where.name}: {where.failed}{of} failed; {errors}"
    # Behind no instrumented holder: another program ("unknown" in stores before schema 6).
    elsewhere = [r for r in rows if r["blocker_call_site"] in _NOT_A_SITE]
    outside_waited = sum(r["waited"] or 0.0 for r in elsewhere)
    top = next((r for r in rows if r["blocker_call_site"] not in _NOT_A_SITE), None)
    # The headline follows where most of the waiting went.
    if top is None or outside_waited > (top["waited"] or 0.0):
        outside_n = sum(r["n"] for r in elsewhere)
        return [
            Finding(
                code="timeout",
                title=f"{errors}, {outside_n} of them behind another program",
                evidence=(
                    f"they waited {_seconds(outside_waited)} while no instrumented connection "
                    "held the lock: another program (a sqlite3 shell, a DB browser, a backup, a "
                    "cron script) holds the file"
                ),
                change="find what else opens the database file, or raise the timeout",
                impact_ms=waited + total * FAILED_REQUEST_COST_MS,
                failed=True,
                last_ts=last,
                figures={"busy": total},
            )
        ]
    site = top["blocker_call_site"]
    holds = ev.holds().get(site, _Times())
    p95 = holds.p95_ms
    return [
        Finding(
            code="timeout",
            title=(
                f"{errors}, {top['n']} of them blocked by `{site}`, "
                f"which holds the write lock for p95 {holds.p95()}"
            ),
            evidence=f"they waited {_seconds(waited)} in total before giving up",
            change=TEST_ADVICE
            if top["in_tests"] * 2 > top["n"]
            else (
                "shorten that transaction, batch it, or move the slow work (password hashing, "
                "HTTP calls) out of atomic()"
            ),
            impact_ms=waited + total * FAILED_REQUEST_COST_MS,
            failed=True,
            last_ts=last,
            call_site=site,
            figures={
                "busy": total,
                "blocked_by_top": top["n"],
                "p95_hold_ms": p95,
                "p95_estimated": holds.estimated,
            },
        )
    ]


def _snapshots(ev: _Evidence) -> list[Finding]:
    return _by_call_site(
        ev,
        "snapshot",
        "under WAL, a transaction read an old snapshot and then tried to write after another "
        "connection committed",
        'set "transaction_mode": "IMMEDIATE", or write before reading',
    )


def _wal(ev: _Evidence) -> list[Finding]:
    """Every wait WAL would remove: under the rollback journal a committing writer blocks
    readers (it holds PENDING, then EXCLUSIVE), and a COMMIT waits for open readers."""
    (r,) = ev.all(
        "SELECT count(*) AS n, coalesce(sum(wait_ms), 0) AS waited,"
        " coalesce(sum(stmt_class = 'commit'), 0) AS commits,"
        " coalesce(sum(CASE WHEN stmt_class = 'commit' THEN wait_ms END), 0) AS commit_ms,"
        " coalesce(sum(kind = 'busy'), 0) AS busy, max(ts) AS last FROM events"
        f" WHERE {_WAITS} AND ({_WAL_REMOVES}){{w}}"
    )
    if not r["n"] or (r["waited"] < HIDDEN_WAIT_P95_MS and not r["busy"]):
        return []
    reads = r["n"] - r["commits"]
    parts = []
    if reads:
        parts.append(f"{_count(reads, 'read')} blocked by a committing writer")
    if r["commits"]:
        parts.append(
            f"{_count(r['commits'], 'COMMIT')} waited {_seconds(r['commit_ms'])} for readers"
        )
    failed = f", {r['busy']} of them failed (busy)" if r["busy"] else ""
    return [
        Finding(
            code="wal",
            title=(
                f"WAL would remove {_count(r['n'], 'wait')} ({_seconds(r['waited'])} in total) "
                "under the rollback journal"
            ),
            evidence=" and ".join(parts) + failed,
            change="enable WAL (PRAGMA journal_mode=WAL): readers and writers then never block "
            "each other",
            impact_ms=r["waited"] + r["busy"] * FAILED_REQUEST_COST_MS,
            failed=bool(r["busy"]),
            last_ts=r["last"],
            figures={
                "waits": r["n"],
                "waited_ms": r["waited"],
                "reads": reads,
                "commits": r["commits"],
                "busy": r["busy"],
            },
        )
    ]


def _locked(ev: _Evidence) -> list[Finding]:
    (r,) = ev.all(
        f"SELECT count(*) AS n, max(call_site) AS site, max(ts) AS last FROM events"
        f" WHERE {_WAITS}"
        " AND kind = 'busy' AND classification = 'locked'{w}"
    )
    if not r["n"]:
        return []
    return [
        Finding(
            code="locked",
            title=f"{_count(r['n'], '`database table is locked` error')}, e.g. at `{r['site']}`",
            evidence="a table was locked by another statement on a shared-cache connection",
            change="avoid shared cache (cache=shared), and finish reading a cursor before writing",
            impact_ms=r["n"] * FAILED_REQUEST_COST_MS,
            call_site=r["site"],
            failed=True,
            last_ts=r["last"],
            figures={"busy": r["n"]},
        )
    ]


def _hidden_waits(ev: _Evidence) -> list[Finding]:
    # Exact at any window: waits are a small share of the events, read index-only
    # (rollup.WAITS) as plain tuples; measured, that is cheaper than binning them in
    # a GROUP BY (which sorts every row).
    values: defaultdict[str, list[float]] = defaultdict(list)
    last: dict[str, float] = {}
    for site, ms, ts in ev.tuples(
        "SELECT blocker_call_site, COALESCE(wait_ms, 0), ts FROM events"
        f" WHERE {_WAITS} AND kind = 'wait' AND outcome = 'acquired'"
        f" AND NOT ({_WAL_REMOVES}){{w}}"
    ):
        values[site or "unknown"].append(ms)
        last[site or "unknown"] = max(ts, last.get(site or "unknown", ts))
    out = []
    for site, times in values.items():
        waits = _Times.exact(times)
        total = waits.total_ms
        if total < HIDDEN_WAIT_TOTAL_MS and waits.p95_ms < HIDDEN_WAIT_P95_MS:
            continue
        blocker, figures = "", {"waits": waits.count, "waited_ms": total}
        change = (
            "keep write transactions short: take the lock late (write last), and move "
            "slow work out of atomic()"
        )
        evidence = f"no error was raised, but p95 wait was {waits.p95()}"
        code = "hidden-waits"
        if site != "unknown":
            holds = ev.holds().get(site, _Times())
            figures["p95_hold_ms"] = holds.p95_ms
            figures["p95_estimated"] = holds.estimated
            blocker = f", behind `{site}` (p95 hold {holds.p95()})"
            if holds.count and holds.p95_ms < SHORT_HOLD_P95_MS:
                code = "busy-schedule"
                evidence = (
                    f"p95 wait {waits.p95()} behind holds of p95 {holds.p95()}: not a long "
                    "transaction, but SQLite's busy handler, which sleeps up to 100 ms between "
                    "tries and misses the moments the lock is free"
                )
                change = (
                    'enable WAL, set "transaction_mode": "IMMEDIATE" (writers queue at BEGIN), '
                    'or LOCKWATCH["FAST_HANDOFF"] (polls every 0.25-2 ms)'
                )
        out.append(
            Finding(
                code=code,
                title=(
                    f"{_count(waits.count, 'statement')} waited {_seconds(total)} in total "
                    f"for the lock{blocker}"
                ),
                evidence=evidence,
                change=change,
                impact_ms=total,
                call_site=None if site == "unknown" else site,
                last_ts=last[site],
                figures=figures,
            )
        )
    return out


def _long_holds(ev: _Evidence, seen: set[str | None]) -> list[Finding]:
    out = []
    for site, holds in ev.holds(transactions_only=True).items():
        if holds.p95_ms < LONG_HOLD_P95_MS or site in seen:
            continue
        out.append(
            Finding(
                code="long-hold",
                title=f"`{site}` holds the write lock for p95 {holds.p95()}",
                evidence=(
                    f"{_count(holds.count, 'transaction')} held it {_seconds(holds.total_ms)} "
                    "in total"
                ),
                change="every other writer waits meanwhile: commit in smaller batches",
                impact_ms=holds.total_ms / 10.0,
                call_site=site,
                figures={
                    "transactions": holds.count,
                    "p95_hold_ms": holds.p95_ms,
                    "p95_estimated": holds.estimated,
                },
            )
        )
    return out


# lockwatch's own health, from the processes table: (figure, title, evidence, change).
_HEALTH = (
    ("dropped", "lockwatch dropped {events} from a full buffer",
     "capture never blocks the app, so overflow is dropped and counted",
     'raise LOCKWATCH["BUFFER_SIZE"], or lower FLUSH_INTERVAL'),
    ("lost", "lockwatch could not store {events}",
     "the store was unwritable for a while",
     'check LOCKWATCH["STORE"]: its folder must be writable and have space'),
    ("inferred", "some processes infer lock waits from timings",
     "the exact busy handler could not be installed there",
     "run CPython with a dynamically linked SQLite for exact waits"),
)  # fmt: skip


def _health(conn: sqlite3.Connection) -> list[Finding]:
    try:
        r = conn.execute(
            "SELECT coalesce(sum(dropped), 0) AS dropped, coalesce(sum(lost), 0) AS lost,"
            " max(capture_mode = 'inferred') AS inferred FROM processes"
        ).fetchone()
    except sqlite3.Error:
        return []
    return [
        Finding(code=figure, title=title.format(events=_count(r[figure], "event")),
                evidence=evidence, change=change, impact_ms=0.0)
        for figure, title, evidence, change in _HEALTH
        if r[figure]
    ]  # fmt: skip
