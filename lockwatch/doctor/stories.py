"""Findings that tell a story across events: per call site, same thread, tests, retries."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from lockwatch.events import IN_WINDOW

from .evidence import (
    FAILED_REQUEST_COST_MS,
    NOT_A_SITE,
    RETRY_GAP_S,
    WAITS,
    Evidence,
    Finding,
    fmt_count,
    fmt_seconds,
    in_context,
)


def by_call_site(ev: Evidence, classification: str, evidence: str, change: str) -> list[Finding]:
    sites: dict[str, list[Any]] = defaultdict(list)
    for r in ev.busy():
        if r["classification"] != classification:
            continue
        sites[r["call_site"] or "unknown"].append(r)
    wheres = where_from(ev, sites)
    out = []
    for site, rows in sites.items():
        n, where = sum(r["n"] for r in rows), wheres[site]
        if where.failed:
            of = f" of {fmt_count(where.requests, 'request')}" if where.requests else " requests"
            title = f"{where.name}: {where.failed}{of} failed with `{classification}` at `{site}`"
        else:
            title = f"{fmt_count(n, f'`{classification}` busy error')} at `{site}`{where.at}"
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
        return in_context(self.context)


def where_from(ev: Evidence, groups: dict[str, list[Any]]) -> dict[str, _Where]:
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
TEST_ADVICE = (
    "in a test: mark it @pytest.mark.django_db(transaction=True), or give the second client "
    "Django's own connection (then it can commit the test's transaction, as pandas does, "
    "and the test's changes outlive it)"
)


def find_same_thread(ev: Evidence) -> list[Finding]:
    """Waits behind the waiter's own thread, on another connection: they cannot succeed."""
    out = []
    # Waiting cannot succeed: it ends in a timeout.
    same = [r for r in ev.timeouts if r["same"]]
    for r in sorted(same, key=lambda r: -r["n"]):
        site, holder = r["call_site"] or "unknown", r["blocker_call_site"] or "unknown"
        context = r["context"] or ""
        what = fmt_count(r["n"], "busy error")
        evidence = (
            f"the holder is the waiter's own thread, on another connection: it cannot let go "
            f"while that thread waits, so waiting cannot succeed "
            f"({fmt_seconds(r['waited'])} waited)"
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
                    f"{what} at `{site}`{in_context(context)}: two connections in one thread; the "
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


def find_test_isolation(ev: Evidence) -> list[Finding]:
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
            f" AND pid = ? AND thread_id IS ? AND {IN_WINDOW} ORDER BY ts DESC LIMIT 1",
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


def find_retries(ev: Evidence) -> list[Finding]:
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
        f"SELECT id, ts, wait_ms, call_site FROM events WHERE {WAITS} AND kind = 'busy'{{w}}"
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
        behind = "another program" if blocker in NOT_A_SITE else f"`{blocker}`"
        if len(story) == 1:
            (r,) = story
            title = (
                f"{tries} tries over {fmt_seconds((r.end - r.start) * 1000)} at `{site}`"
                f"{in_context(context)} behind {behind}, the last "
                + ("succeeded" if r.succeeded else "failed")
            )
        else:
            title = (
                f"{len(story)} statements retried at `{site}`{in_context(context)} "
                f"behind {behind}: "
                f"{tries} tries, {len(story) - failed} of {len(story)} succeeded in the end"
            )
        out.append(
            Finding(
                code="retries",
                title=title,
                evidence=(
                    f"each busy error was retried within {RETRY_GAP_S:.0f} s; they waited "
                    f"{fmt_seconds(waited)} in total"
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
