"""The doctor's evidence: the window's events, read once, and the figures findings share."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lockwatch import events
from lockwatch.store import rollup
from lockwatch.store.filters import Filters

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
WAITS = rollup.WAITS  # waits and busy errors: their covering index's own WHERE


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


def fmt_count(n: int, noun: str) -> str:
    """ "1 transaction", "2 transactions"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def fmt_seconds(ms: float) -> str:
    return f"{ms / 1000.0:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


@dataclass(frozen=True)
class Times:
    """One call site's hold (or wait) times in the window."""

    count: int = 0
    total_ms: float = 0.0
    p95_ms: float = 0.0
    estimated: bool = False  # p95 from a 1-2-5 histogram (a window over an hour)

    @classmethod
    def exact(cls, values: list[float]) -> Times:
        return cls(len(values), sum(values), _p95(values))

    @classmethod
    def binned(cls, hist: rollup.Hist) -> Times:
        return cls(hist.count, hist.sum_ms, hist.quantile(_rank(hist.count)) or 0.0, True)

    def p95(self) -> str:
        """The p95 as text; "≈" marks an estimate."""
        return f"{'≈ ' if self.estimated else ''}{fmt_seconds(self.p95_ms)}"


class Evidence:
    def __init__(self, conn: sqlite3.Connection, since: float | None, until: float | None) -> None:
        self.conn = conn
        self.since, self.until = since, until
        clause, self.args = Filters(since=since, until=until).where()
        self.where = f" AND {clause}" if clause else ""
        self._holds: tuple[dict[str, Times], dict[str, Times]] | None = None
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
                f" WHERE {WAITS} AND kind = 'busy' AND {_NOT_RETRIED}{{w}}"
                " GROUP BY classification, call_site",
                json.dumps(self.retried),
            )
            sampled: dict[tuple[Any, Any], Counter[str]] = defaultdict(Counter)
            for r in self.all(
                "SELECT classification, call_site, context, count(*) AS n FROM events"
                f" WHERE id IN (SELECT id FROM events WHERE {WAITS} AND kind = 'busy'"
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
            " max(blocker_held_ms) AS held,"
            f" coalesce(sum({_TEST_TRANSACTION}), 0) AS in_tests FROM events"
            f" WHERE id IN (SELECT id FROM events WHERE {WAITS} AND kind = 'busy'"
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

    def holds(self, transactions_only: bool = False) -> dict[str, Times]:
        """Per call site where the lock was taken (as a blocker is named): every hold
        (transactions and autocommit writes), or the transactions' only."""
        if self._holds is None:
            long = self.long
            self._holds = self._exact_holds() if long is None else self._rollup_holds(long)
        return self._holds[transactions_only]

    def _exact_holds(self) -> tuple[dict[str, Times], dict[str, Times]]:
        # One pass over the window for every call site, not one scan per site.
        every: dict[str, list[float]] = {}
        txn: dict[str, list[float]] = {}
        for is_txn, site, ms in self.tuples(
            f"SELECT kind = 'transaction', {rollup.HOLD_SITE}, hold_ms FROM events"
            f" WHERE {events.HOLD}{{w}}"
        ):
            every.setdefault(site or "unknown", []).append(ms)
            if is_txn:
                txn.setdefault(site or "unknown", []).append(ms)

        # The quiet writes (lockwatch.pipeline.quiet) are kept by bin: merged, the counts and
        # totals stay exact, and the p95 too unless it falls among them.
        since = 0.0 if self.since is None else self.since
        until = 1e18 if self.until is None else self.until
        quiet = rollup.quiet_histograms(self.conn, since, until, (rollup.TXN, rollup.WRITE))

        def summary(by_site: dict[str, list[float]], names: tuple[str, ...]) -> dict[str, Times]:
            q = rollup.by_site(quiet, names, "unknown")
            out = {}
            for site in by_site.keys() | q.keys():
                values = sorted(by_site.get(site, ()))
                n, total, p95, estimated = rollup.summary(values, q.get(site))
                out[site] = Times(n, total, p95 or 0.0, estimated)
            return out

        return summary(every, (rollup.TXN, rollup.WRITE)), summary(txn, (rollup.TXN,))

    def _rollup_holds(self, long: tuple[float, float]) -> tuple[dict[str, Times], dict[str, Times]]:
        holds = (rollup.TXN, rollup.WRITE)
        hists = rollup.histograms(self.conn, *long, holds)

        def summary(names: tuple[str, ...]) -> dict[str, Times]:
            return {
                site: Times.binned(h) for site, h in rollup.by_site(hists, names, "unknown").items()
            }

        return summary(holds), summary((rollup.TXN,))


def fmt_when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts or 0.0, UTC).strftime("%Y-%m-%d %H:%M UTC")


def in_context(context: str | None) -> str:
    """ " in POST /orders/", " in command:import": where a finding happened."""
    if not context:
        return ""
    if context.startswith("request:"):
        return f" in {context[len('request:') :]}"
    return f" in {context}"


_NOT_RETRIED = "id NOT IN (SELECT value FROM json_each(?))"

_TEST_TRANSACTION = "blocker_context LIKE 'test:%' AND blocker_thread = 'MainThread'"

NOT_A_SITE = (None, events.UNKNOWN, events.OUTSIDE, events.READERS, events.WAL_READ)
