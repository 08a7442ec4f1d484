"""The doctor: what to change, from the evidence in the store.

Every number in a finding is computed from the store's events. Findings are
ranked by impact: an estimate of the time the app lost (failed requests count
as the time they waited, plus a second each for the retry a user makes).

Over a window whose events span more than an hour, hold times come from the
store's rollup (``lockwatch.store.rollup``): counts and totals exact, a p95 hold
estimated within its 1-2-5 bin and shown with "≈". LONG_HOLD_P95_MS is a bin
edge, so whether a p95 reaches it is still decided exactly.
"""

from __future__ import annotations

import dataclasses
import sqlite3

from .causes import (
    find_health,
    find_hidden_waits,
    find_locked,
    find_long_holds,
    find_snapshots,
    find_timeouts,
    find_upgrades,
    find_wal,
)
from .evidence import (
    FAILED_REQUEST_COST_MS,
    HIDDEN_WAIT_P95_MS,
    HIDDEN_WAIT_TOTAL_MS,
    LONG_HOLD_P95_MS,
    SHORT_HOLD_P95_MS,
    Evidence,
    Finding,
    fmt_seconds,
    fmt_when,
)
from .stories import (
    find_retries,
    find_same_thread,
    find_test_isolation,
)


def findings(
    conn: sqlite3.Connection, since: float | None = None, until: float | None = None
) -> list[Finding]:
    conn.row_factory = sqlite3.Row
    ev = Evidence(conn, since, until)
    out: list[Finding] = []
    out += find_retries(ev)  # first: the busy errors it tells are not told again
    out += find_same_thread(ev)
    out += find_test_isolation(ev)
    out += find_upgrades(ev)
    out += find_timeouts(ev)
    out += find_snapshots(ev)
    out += find_wal(ev)
    out += find_locked(ev)
    out += find_hidden_waits(ev)
    out += find_long_holds(ev, {f.call_site for f in out})
    out += find_health(conn)
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
        dataclasses.replace(f, title=f"{f.title} (last seen {fmt_when(f.last_ts)}, not since)")
        for f in found
        if f.last_ts is not None and f.last_ts < cutoff and f.code not in now
    ]
    harm = lambda f: (not f.failed, -f.impact_ms)  # noqa: E731
    return sorted(current, key=harm) + sorted(old, key=harm)


__all__ = [
    "FAILED_REQUEST_COST_MS", "HIDDEN_WAIT_P95_MS", "HIDDEN_WAIT_TOTAL_MS", "LONG_HOLD_P95_MS",
    "OLD_EVIDENCE_S", "SHORT_HOLD_P95_MS", "Finding", "fmt_seconds", "findings",
]  # fmt: skip
