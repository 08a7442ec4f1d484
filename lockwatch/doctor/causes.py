"""Findings about causes: upgrades, timeouts, snapshots, WAL, long holds, health."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from typing import Any

from lockwatch import store

from .evidence import (
    FAILED_REQUEST_COST_MS,
    HIDDEN_WAIT_P95_MS,
    HIDDEN_WAIT_TOTAL_MS,
    LONG_HOLD_P95_MS,
    NOT_A_SITE,
    SHORT_HOLD_P95_MS,
    WAITS,
    Evidence,
    Finding,
    Times,
    fmt_count,
    fmt_seconds,
)
from .stories import (
    TEST_ADVICE,
    by_call_site,
    where_from,
)


def find_upgrades(ev: Evidence) -> list[Finding]:
    return by_call_site(
        ev,
        "upgrade",
        "a deferred transaction read, then tried to write while another connection held the "
        "write lock; SQLite fails it at once, without waiting",
        'set "transaction_mode": "IMMEDIATE" in OPTIONS, or write first',
    )


# The waits WAL removes: a read behind an instrumented writer (under WAL a reader never
# waits for a writer, so this is the rollback journal), and a COMMIT waiting for readers.
_WAL_REMOVES = (
    "stmt_class = 'commit' OR (stmt_class = 'read' AND blocker_context IS NOT NULL"
    " AND blocker_context NOT IN ('outside', 'unknown', 'readers', 'wal-read'))"
)


def find_timeouts(ev: Evidence) -> list[Finding]:
    grouped = [r for r in ev.timeouts if not r["same"]]
    if not grouped:
        return []
    by_blocker: dict[Any, dict[str, Any]] = {}
    for g in grouped:
        b = by_blocker.setdefault(
            g["blocker_call_site"],
            {"blocker_call_site": g["blocker_call_site"], "n": 0, "waited": 0.0, "in_tests": 0,
             "held": 0.0},
        )  # fmt: skip
        b["held"] = max(b["held"], g["held"] or 0.0)
        b["n"] += g["n"]
        b["waited"] += g["waited"] or 0.0
        b["in_tests"] += g["in_tests"]
    rows = sorted(by_blocker.values(), key=lambda b: -b["n"])
    total = sum(r["n"] for r in rows)
    waited = sum(r["waited"] or 0.0 for r in rows)
    last = max(g["last"] for g in grouped)
    where = where_from(ev, {"": list(grouped)})[""]
    errors = fmt_count(total, "`timeout` busy error") + where.at
    if where.failed:
        of = f" of {fmt_count(where.requests, 'request')}" if where.requests else " requests"
        errors = f"{where.name}: {where.failed}{of} failed; {errors}"
    # Behind no instrumented holder: another program ("unknown" in stores before schema 6).
    elsewhere = [r for r in rows if r["blocker_call_site"] in NOT_A_SITE]
    outside_waited = sum(r["waited"] or 0.0 for r in elsewhere)
    top = next((r for r in rows if r["blocker_call_site"] not in NOT_A_SITE), None)
    # The headline follows where most of the waiting went.
    if top is None or outside_waited > (top["waited"] or 0.0):
        outside_n = sum(r["n"] for r in elsewhere)
        return [
            Finding(
                code="timeout",
                title=f"{errors}, {outside_n} of them behind another program",
                evidence=(
                    f"they waited {fmt_seconds(outside_waited)} while no instrumented connection "
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
    holds = ev.holds().get(site, Times())
    p95 = holds.p95_ms
    if holds.count:
        held = f"which holds the write lock for p95 {holds.p95()}"
    else:  # its transaction has not ended yet (still held, or its process died holding it)
        held = f"which had held the write lock for {fmt_seconds(top['held'])} when they gave up"
    return [
        Finding(
            code="timeout",
            title=f"{errors}, {top['n']} of them blocked by `{site}`, {held}",
            evidence=f"they waited {fmt_seconds(waited)} in total before giving up",
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


def find_snapshots(ev: Evidence) -> list[Finding]:
    return by_call_site(
        ev,
        "snapshot",
        "under WAL, a transaction read an old snapshot and then tried to write after another "
        "connection committed",
        'set "transaction_mode": "IMMEDIATE", or write before reading',
    )


def find_wal(ev: Evidence) -> list[Finding]:
    """Every wait WAL would remove: under the rollback journal a committing writer blocks
    readers (it holds PENDING, then EXCLUSIVE), and a COMMIT waits for open readers."""
    (r,) = ev.all(
        "SELECT count(*) AS n, coalesce(sum(wait_ms), 0) AS waited,"
        " coalesce(sum(stmt_class = 'commit'), 0) AS commits,"
        " coalesce(sum(CASE WHEN stmt_class = 'commit' THEN wait_ms END), 0) AS commit_ms,"
        " coalesce(sum(kind = 'busy'), 0) AS busy, max(ts) AS last FROM events"
        f" WHERE {WAITS} AND ({_WAL_REMOVES}){{w}}"
    )
    if not r["n"] or (r["waited"] < HIDDEN_WAIT_P95_MS and not r["busy"]):
        return []
    reads = r["n"] - r["commits"]
    parts = []
    if reads:
        parts.append(f"{fmt_count(reads, 'read')} blocked by a committing writer")
    if r["commits"]:
        parts.append(
            f"{fmt_count(r['commits'], 'COMMIT')} waited {fmt_seconds(r['commit_ms'])} for readers"
        )
    failed = f", {r['busy']} of them failed (busy)" if r["busy"] else ""
    return [
        Finding(
            code="wal",
            title=(
                f"WAL would remove {fmt_count(r['n'], 'wait')} ({fmt_seconds(r['waited'])} in "
                "total) under the rollback journal"
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


def find_locked(ev: Evidence) -> list[Finding]:
    (r,) = ev.all(
        f"SELECT count(*) AS n, max(call_site) AS site, max(ts) AS last FROM events"
        f" WHERE {WAITS}"
        " AND kind = 'busy' AND classification = 'locked'{w}"
    )
    if not r["n"]:
        return []
    return [
        Finding(
            code="locked",
            title=f"{fmt_count(r['n'], '`database table is locked` error')}, e.g. at `{r['site']}`",
            evidence="a table was locked by another statement on a shared-cache connection",
            change="avoid shared cache (cache=shared), and finish reading a cursor before writing",
            impact_ms=r["n"] * FAILED_REQUEST_COST_MS,
            call_site=r["site"],
            failed=True,
            last_ts=r["last"],
            figures={"busy": r["n"]},
        )
    ]


def find_hidden_waits(ev: Evidence) -> list[Finding]:
    # Exact at any window: waits are a small share of the events, read index-only
    # (rollup.WAITS) as plain tuples; measured, that is cheaper than binning them in
    # a GROUP BY (which sorts every row).
    values: defaultdict[str, list[float]] = defaultdict(list)
    last: dict[str, float] = {}
    for site, ms, ts in ev.tuples(
        "SELECT blocker_call_site, COALESCE(wait_ms, 0), ts FROM events"
        f" WHERE {WAITS} AND kind = 'wait' AND outcome = 'acquired'"
        f" AND NOT ({_WAL_REMOVES}){{w}}"
    ):
        values[site or "unknown"].append(ms)
        last[site or "unknown"] = max(ts, last.get(site or "unknown", ts))
    out = []
    for site, times in values.items():
        waits = Times.exact(times)
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
            holds = ev.holds().get(site, Times())
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
                    f"{fmt_count(waits.count, 'statement')} waited {fmt_seconds(total)} in total "
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


def find_long_holds(ev: Evidence, seen: set[str | None]) -> list[Finding]:
    out = []
    for site, holds in ev.holds(transactions_only=True).items():
        if holds.p95_ms < LONG_HOLD_P95_MS or site in seen:
            continue
        out.append(
            Finding(
                code="long-hold",
                title=f"`{site}` holds the write lock for p95 {holds.p95()}",
                evidence=(
                    f"{fmt_count(holds.count, 'transaction')} held it "
                    f"{fmt_seconds(holds.total_ms)} in total"
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


def find_health(conn: sqlite3.Connection) -> list[Finding]:
    try:
        r = store.totals(conn)._asdict()
    except sqlite3.Error:
        return []
    return [
        Finding(code=figure, title=title.format(events=fmt_count(r[figure], "event")),
                evidence=evidence, change=change, impact_ms=0.0)
        for figure, title, evidence, change in _HEALTH
        if r[figure]
    ]  # fmt: skip
