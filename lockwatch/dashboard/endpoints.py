"""Per endpoint and command, and one request's story: SQL over the store, plain data out.

An endpoint is a request context (``request:POST /create_user/``), as the doctor names
it; a command or program is its context (``command:restock``). Runs of a command come
from the store's ``processes`` table (one row per process), so they are counted
without reading every event of the window.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from lockwatch import events
from lockwatch.events import IN_WINDOW
from lockwatch.live import payload

from .queries import COLS


@dataclass
class Endpoint:
    context: str
    requests: int = 0  # requests of an endpoint, processes of a command
    failed: int = 0  # requests with status 500 or more; runs that got a busy error
    busy: dict[str, int] = field(default_factory=dict)  # by classification
    waits: int = 0
    wait_ms: float = 0.0
    blocker: str | None = None  # the call site that cost it the most
    blocker_context: str | None = None
    blocker_busy: int = 0
    blocker_wait_ms: float = 0.0

    @property
    def is_request(self) -> bool:
        return self.context.startswith("request:")

    @property
    def busy_total(self) -> int:
        return sum(self.busy.values())

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.requests if self.requests else None

    @property
    def name(self) -> str:
        return self.context.removeprefix("request:")


def endpoints(
    conn: sqlite3.Connection, since: float, until: float, limit: int = 30
) -> tuple[list[Endpoint], int]:
    """The endpoints and commands that waited or failed in the window, worst first, and
    how many there were in all (the list is cut to ``limit``)."""
    rows: dict[str, Endpoint] = {}

    def get(context: str | None) -> Endpoint:
        key = context or events.UNKNOWN
        if key not in rows:
            rows[key] = Endpoint(key)
        return rows[key]

    window = (since, until)
    busy_pids: dict[str, set[int]] = defaultdict(set)
    for context, kind, cls, pid, n, ms in conn.execute(
        "SELECT context, kind, classification, pid, count(*), COALESCE(sum(wait_ms), 0)"
        f" FROM events WHERE kind IN ('wait', 'busy') AND {IN_WINDOW}"
        " GROUP BY context, kind, classification, pid",
        window,
    ):
        ep = get(context)
        if kind == "busy":
            label = cls or "other"
            ep.busy[label] = ep.busy.get(label, 0) + n
            busy_pids[ep.context].add(pid)
        else:
            ep.waits += n
            ep.wait_ms += ms
    if not rows:
        return [], 0
    # Requests of the endpoints that waited or failed (an endpoint that never did is not
    # news here; the doctor and the events table have it).
    for context, n, failed in conn.execute(
        "SELECT context, count(*), COALESCE(sum(status >= 500), 0) FROM events"
        f" WHERE kind = 'request' AND {IN_WINDOW} GROUP BY context",
        window,
    ):
        if context in rows:
            rows[context].requests, rows[context].failed = n, failed
    programs = [ep.context for ep in rows.values() if not ep.is_request]
    if programs:
        marks = ",".join("?" * len(programs))
        for program, n in conn.execute(
            f"SELECT program, count(*) FROM processes WHERE program IN ({marks})"
            " AND started <= ? AND COALESCE(updated, started) >= ? GROUP BY program",
            (*programs, until, since),
        ):
            ep = rows[program]
            ep.requests = max(n, len(busy_pids.get(program, ())))
            ep.failed = len(busy_pids.get(program, ()))
    # The worst blocker of each: by busy errors caused, then by wait time caused.
    cost: dict[str, dict[tuple[str, str | None], list[float]]] = defaultdict(dict)
    for context, site, bctx, kind, n, ms in conn.execute(
        "SELECT context, blocker_call_site, blocker_context, kind, count(*),"
        " COALESCE(sum(wait_ms), 0) FROM events WHERE kind IN ('wait', 'busy')"
        f" AND {IN_WINDOW} AND blocker_call_site IS NOT NULL"
        " GROUP BY context, blocker_call_site, blocker_context, kind",
        window,
    ):
        entry = cost[context or events.UNKNOWN].setdefault((site, bctx), [0, 0.0])
        if kind == "busy":
            entry[0] += n
        else:
            entry[1] += ms
    for context, blockers in cost.items():
        (site, bctx), (n, ms) = max(blockers.items(), key=lambda kv: (kv[1][0], kv[1][1]))
        ep = rows[context]
        ep.blocker, ep.blocker_context, ep.blocker_busy, ep.blocker_wait_ms = site, bctx, int(n), ms
    ranked = sorted(rows.values(), key=lambda e: (-e.busy_total, -e.wait_ms, e.context))
    return ranked[:limit], len(ranked)


# -- one request -----------------------------------------------------------------

REQUEST_LOOKAROUND = 3600.0  # a request's events lie within an hour of any one of them
MAX_REQUEST_EVENTS = 500


@dataclass
class RequestStory:
    request_id: str
    request: dict[str, Any] | None  # its request row (none until the request ended)
    events: list[dict[str, Any]]  # in order, the request row left out
    cut: bool  # more events than shown

    @property
    def context(self) -> str | None:
        if self.request is not None:
            context: str | None = self.request["context"]
            return context
        return self.events[0]["context"] if self.events else None

    @property
    def start(self) -> float | None:
        if self.request is not None:
            return float(self.request["ts"])
        return float(self.events[0]["ts"]) if self.events else None


def request_story(
    conn: sqlite3.Connection, request_id: str, since: float, until: float
) -> RequestStory | None:
    """The events of one request in ``[since, until]``, in order, by the ``ts`` index.

    Request ids can repeat (a client's own X-Request-ID): the newest request row's
    time span wins, and the events are those inside it.
    """
    found = conn.execute(
        f"SELECT {COLS}, request_id, method, path, view, status, queries, db_ms, busy_count"
        f" FROM events WHERE {IN_WINDOW} AND request_id = ?"
        " ORDER BY ts, id LIMIT ?",
        (since, until, request_id, MAX_REQUEST_EVENTS + 1),
    ).fetchall()
    if not found:
        return None
    requests = [r for r in found if r["kind"] == "request"]
    request = dict(requests[-1]) if requests else None
    rows = [r for r in found if r["kind"] != "request"]
    if request is not None:
        start = request["ts"]
        end = start + (request["duration_ms"] or 0) / 1000.0
        rows = [r for r in rows if start - 0.001 <= r["ts"] <= end + 0.001]
    cut = len(found) > MAX_REQUEST_EVENTS
    return RequestStory(request_id, request, [payload(r) for r in rows[:MAX_REQUEST_EVENTS]], cut)


def request_id_of(conn: sqlite3.Connection, event_id: int) -> tuple[str, float] | None:
    row = conn.execute("SELECT request_id, ts FROM events WHERE id = ?", (event_id,)).fetchone()
    if row is None or not row["request_id"]:
        return None
    return row["request_id"], float(row["ts"])
