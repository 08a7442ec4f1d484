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

import functools
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from . import events, rollup
from .filters import Filters

FAILED_REQUEST_COST_MS = 1000.0
# Waits below these are the normal hand-off of a busy but healthy database.
HIDDEN_WAIT_TOTAL_MS = 1000.0
HIDDEN_WAIT_P95_MS = 100.0
LONG_HOLD_P95_MS = 1000.0
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

    def text(self) -> str:
        return f"{self.title}: {self.change}"


def _rank(count: int) -> int:
    """The (1-based) rank of the p95 among count values: nearest rank, as on the dashboard."""
    return rollup.nearest_rank(count, 95)


def _p95(values: list[float]) -> float:
    if not values:
        return 0.0
    return sorted(values)[_rank(len(values)) - 1]


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
    out += _upgrades(ev)
    out += _timeouts(ev)
    out += _snapshots(ev)
    out += _commit_waits(ev)
    out += _locked(ev)
    out += _hidden_waits(ev)
    out += _long_holds(ev, {f.call_site for f in out})
    out += _health(conn)
    return sorted(out, key=lambda f: f.impact_ms, reverse=True)


def _by_call_site(ev: _Evidence, classification: str, evidence: str, change: str) -> list[Finding]:
    out = []
    for r in ev.all(
        f"SELECT call_site, count(*) AS n FROM events WHERE {_WAITS} AND kind = 'busy'"
        " AND classification = ?{w} GROUP BY call_site ORDER BY n DESC",
        classification,
    ):
        site = r["call_site"] or "unknown"
        out.append(
            Finding(
                code=classification,
                title=f"{r['n']} `{classification}` busy errors at `{site}`",
                evidence=evidence,
                change=change,
                impact_ms=r["n"] * FAILED_REQUEST_COST_MS,
                call_site=site,
                figures={"busy": r["n"]},
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


_NOT_A_SITE = (None, events.UNKNOWN, events.OUTSIDE, events.READERS)


def _timeouts(ev: _Evidence) -> list[Finding]:
    rows = ev.all(
        "SELECT blocker_call_site, count(*) AS n, sum(wait_ms) AS waited FROM events"
        f" WHERE {_WAITS} AND kind = 'busy' AND classification = 'timeout'{{w}}"
        " GROUP BY blocker_call_site ORDER BY n DESC"
    )
    total = sum(r["n"] for r in rows)
    if not total:
        return []
    waited = sum(r["waited"] or 0.0 for r in rows)
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
                title=f"{total} `timeout` busy errors, {outside_n} of them behind another program",
                evidence=(
                    f"they waited {_seconds(outside_waited)} while no instrumented connection "
                    "held the lock: another program (a sqlite3 shell, a DB browser, a backup, a "
                    "cron script) holds the file"
                ),
                change="find what else opens the database file, or raise the timeout",
                impact_ms=waited + total * FAILED_REQUEST_COST_MS,
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
                f"{total} `timeout` busy errors, {top['n']} of them blocked by `{site}`, "
                f"which holds the write lock for p95 {holds.p95()}"
            ),
            evidence=f"they waited {_seconds(waited)} in total before giving up",
            change=(
                "shorten that transaction, batch it, or move the slow work (password hashing, "
                "HTTP calls) out of atomic()"
            ),
            impact_ms=waited + total * FAILED_REQUEST_COST_MS,
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


def _commit_waits(ev: _Evidence) -> list[Finding]:
    (r,) = ev.all(
        "SELECT count(*) AS n, coalesce(sum(wait_ms), 0) AS waited FROM events"
        f" WHERE {_WAITS} AND kind = 'wait' AND stmt_class = 'commit'{{w}}"
    )
    if not r["n"] or r["waited"] < HIDDEN_WAIT_P95_MS:
        return []
    return [
        Finding(
            code="commit-readers",
            title=(
                f"COMMIT waited on readers for {_seconds(r['waited'])} in total "
                "under the rollback journal"
            ),
            evidence=f"{r['n']} commits had to wait for readers to finish",
            change="enable WAL (PRAGMA journal_mode=WAL), so readers never block a commit",
            impact_ms=r["waited"],
            figures={"waits": r["n"], "waited_ms": r["waited"]},
        )
    ]


def _locked(ev: _Evidence) -> list[Finding]:
    (r,) = ev.all(
        f"SELECT count(*) AS n, max(call_site) AS site FROM events WHERE {_WAITS}"
        " AND kind = 'busy' AND classification = 'locked'{w}"
    )
    if not r["n"]:
        return []
    return [
        Finding(
            code="locked",
            title=f"{r['n']} `database table is locked` errors, e.g. at `{r['site']}`",
            evidence="a table was locked by another statement on a shared-cache connection",
            change="avoid shared cache (cache=shared), and finish reading a cursor before writing",
            impact_ms=r["n"] * FAILED_REQUEST_COST_MS,
            call_site=r["site"],
            figures={"busy": r["n"]},
        )
    ]


def _hidden_waits(ev: _Evidence) -> list[Finding]:
    # Exact at any window: waits are a small share of the events, read index-only
    # (rollup.WAITS) as plain tuples; measured, that is cheaper than binning them in
    # a GROUP BY (which sorts every row).
    values: defaultdict[str, list[float]] = defaultdict(list)
    for site, ms in ev.tuples(
        "SELECT blocker_call_site, COALESCE(wait_ms, 0) FROM events"
        f" WHERE {_WAITS} AND kind = 'wait' AND outcome = 'acquired'"
        " AND stmt_class != 'commit'{w}"
    ):
        values[site or "unknown"].append(ms)
    out = []
    for site, times in values.items():
        waits = _Times.exact(times)
        total = waits.total_ms
        if total < HIDDEN_WAIT_TOTAL_MS and waits.p95_ms < HIDDEN_WAIT_P95_MS:
            continue
        blocker, figures = "", {"waits": waits.count, "waited_ms": total}
        if site != "unknown":
            holds = ev.holds().get(site, _Times())
            figures["p95_hold_ms"] = holds.p95_ms
            figures["p95_estimated"] = holds.estimated
            blocker = f", behind `{site}` (p95 hold {holds.p95()})"
        out.append(
            Finding(
                code="hidden-waits",
                title=(
                    f"{waits.count} statements waited {_seconds(total)} in total "
                    f"for the lock{blocker}"
                ),
                evidence=f"no error was raised, but p95 wait was {waits.p95()}",
                change=(
                    "keep write transactions short: take the lock late (write last), and move "
                    "slow work out of atomic()"
                ),
                impact_ms=total,
                call_site=None if site == "unknown" else site,
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
                evidence=f"{holds.count} transactions held it {_seconds(holds.total_ms)} in total",
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
    ("dropped", "lockwatch dropped {n} events from a full buffer",
     "capture never blocks the app, so overflow is dropped and counted",
     'raise LOCKWATCH["BUFFER_SIZE"], or lower FLUSH_INTERVAL'),
    ("lost", "lockwatch could not store {n} events",
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
        Finding(code=figure, title=title.format(n=r[figure]), evidence=evidence, change=change,
                impact_ms=0.0)
        for figure, title, evidence, change in _HEALTH
        if r[figure]
    ]  # fmt: skip
