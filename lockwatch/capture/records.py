"""Raw records: what capture appends to the buffer.

They hold references and numbers only, so the query path stays cheap. The
flusher turns each into a full event row (``events.row``) off that path:
formatting call sites, fingerprints, context labels and thread names there.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, NamedTuple

from lockwatch import events
from lockwatch.capture import callsite
from lockwatch.capture.callsite import RawSite, UserStack
from lockwatch.capture.context import Context
from lockwatch.capture.statements import fingerprint


class Origin(NamedTuple):
    """One connection: fixed for its life."""

    pid: int
    alias: str
    db: str
    conn_id: int
    mode: str  # exact or inferred


class Who(NamedTuple):
    """Where an event came from: thread, context and task."""

    thread: threading.Thread
    ctx: Context | str  # a Context, or a default label captured at the time
    task: str | None


class Query(NamedTuple):
    origin: Origin
    who: Who
    wall: float
    dur: float
    sql: str
    params: Any
    stmt_class: str
    rows: int | None
    site: RawSite | None
    wait: float
    hold: float | None  # autocommit writes hold the lock for the statement


class Blocker(NamedTuple):
    """What a wait was behind, as the holder table showed it at the time."""

    kind: str  # holder, readers (a COMMIT waiting for read transactions) or outside
    pid: int | None
    conn_id: int | None
    txn: int | None
    thread: str | None
    context: str | None
    call_site: str | None
    since: float | None  # when the holder took the lock (or began the statement)
    same_thread: bool  # holder and waiter are one thread: waiting cannot succeed

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.kind, self.pid, self.conn_id, self.txn)

    def label(self) -> str:
        if self.kind != "holder":
            return self.kind if self.pid is None else f"{self.kind} (pid {self.pid})"
        return f"{self.call_site or 'unknown'} (pid {self.pid}, {self.thread})"


Split = tuple[tuple[Blocker, float], ...]  # each blocker and the seconds spent behind it


class Wait(NamedTuple):
    origin: Origin
    who: Who
    wall: float
    wait: float
    outcome: str
    sql: str
    stmt_class: str
    site: RawSite | None
    blocker: Blocker | None
    split: Split
    end: float  # wall time the wait ended
    stack: UserStack


class Busy(NamedTuple):
    origin: Origin
    who: Who
    wall: float
    dur: float
    wait: float
    classification: str
    code: int | None
    name: str | None
    message: str
    sql: str
    stmt_class: str
    site: RawSite | None
    blocker: Blocker | None
    split: Split
    end: float
    stack: UserStack
    reads: Reads = ()


class Lock(NamedTuple):
    """The write lock was taken; written to the store's holds at once."""

    origin: Origin
    who: Who
    key: str
    wall: float
    sql: str
    site: RawSite | None


# A transaction's reads before it tried to write: (wall, seconds, call site) each.
Reads = tuple[tuple[float, float, RawSite | None], ...]


class Transaction(NamedTuple):
    origin: Origin
    who: Who
    key: str
    wall: float
    dur: float
    mode: str
    site: RawSite | None
    end: str
    lock_wall: float | None
    hold: float | None
    lock_sql: str | None
    lock_site: RawSite | None
    statements: int
    wait: float
    stack: UserStack
    reads: Reads = ()


class Quiet(NamedTuple):
    """A write or transaction nobody waited for, that did not fail and held the lock
    briefly: the flusher counts it (``lockwatch.pipeline.quiet``) rather than storing it."""

    origin: Origin
    site: RawSite | None  # where the lock was taken (a transaction's: else its BEGIN)
    wall: float
    hold: float | None  # seconds; None for a transaction that never took the lock
    dur: float | None  # a transaction's wall time; None for an autocommit write
    key: str | None  # a transaction's: its Lock record is folded with it


class Request(NamedTuple):
    who: Who
    wall: float
    dur: float
    status: int | None


Record = Query | Wait | Busy | Lock | Transaction | Request | Quiet


def context_label(ctx: Context | str) -> str:
    return ctx if isinstance(ctx, str) else ctx.label


_BLANK: dict[str, Any] = dict.fromkeys(events.NAMES)


def _base(origin: Origin | None, who: Who) -> dict[str, Any]:
    """A row with the origin and who fields filled in; the rest None.

    Built by hand rather than through ``events.row``: this runs once per event
    in the flusher, which shares the GIL with the app.
    """
    row = _BLANK.copy()
    if origin is not None:
        row["pid"] = origin.pid
        row["alias"] = origin.alias
        row["db"] = origin.db
        row["conn_id"] = origin.conn_id
        row["capture_mode"] = origin.mode
    thread = who.thread
    row["thread"] = thread.name
    row["thread_id"] = thread.ident
    ctx = who.ctx
    if isinstance(ctx, str):
        row["context"] = ctx
        row["task"] = who.task
    else:
        row["context"] = ctx.label
        row["task"] = who.task or ctx.task
        row["request_id"] = ctx.request_id
        row["method"] = ctx.method
        row["path"] = ctx.path
        row["view"] = ctx.view
    return row


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


class Limits(NamedTuple):
    sql: int
    params: int


def _clip(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"... [truncated {len(text) - limit} chars]"


def _params_text(params: Any, limit: int) -> str | None:
    if params is None:
        return None
    try:
        text = repr(params)
    except Exception:
        text = "<unrepresentable>"
    # repr() of bytes and str is ASCII-safe for undecodable data, but lone
    # surrogates could still reach it; make it storable UTF-8.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _clip(text, limit)


def to_row(rec: Record, limits: Limits) -> dict[str, Any]:
    """The schema row for one raw record: a dict with exactly ``events.NAMES``."""
    if isinstance(rec, Query):  # by far the most common: kept lean
        row = _base(rec.origin, rec.who)
        row["kind"] = "query"
        row["ts"] = rec.wall
        row["duration_ms"] = round(rec.dur * 1000.0, 3)
        if rec.wait:
            row["wait_ms"] = round(rec.wait * 1000.0, 3)
        if rec.hold is not None:
            row["hold_ms"] = round(rec.hold * 1000.0, 3)
        sql = rec.sql
        row["sql"] = sql if len(sql) <= limits.sql else _clip(sql, limits.sql)
        row["fingerprint"] = _fingerprint(sql, limits.sql)
        row["stmt_class"] = rec.stmt_class
        row["rows"] = rec.rows
        if rec.params is not None:
            row["params"] = _params_text(rec.params, limits.params)
        row["call_site"] = callsite.format(rec.site)
        return row
    if isinstance(rec, Request):
        row = _base(None, rec.who)
        row.update(kind="request", ts=rec.wall, duration_ms=_ms(rec.dur), status=rec.status)
        row["pid"] = os.getpid()
        ctx = rec.who.ctx
        if isinstance(ctx, Context):
            row.update(
                queries=ctx.queries,
                db_ms=_ms(ctx.db_time),
                wait_ms=_ms(ctx.wait_time),
                busy_count=ctx.busy,
            )
        return row
    if isinstance(rec, Quiet):
        raise TypeError("a quiet record is folded (lockwatch.pipeline.quiet), never an event row")
    row = _base(rec.origin, rec.who)
    if isinstance(rec, Wait):
        row.update(
            kind="wait",
            ts=rec.wall,
            duration_ms=_ms(rec.wait),
            wait_ms=_ms(rec.wait),
            outcome=rec.outcome,
            sql=_clip(rec.sql, limits.sql),
            fingerprint=_fingerprint(rec.sql, limits.sql),
            stmt_class=rec.stmt_class,
            call_site=callsite.format(rec.site),
        )
        _blocker(row, rec.blocker, rec.split, rec.end)
        row["user_stack"] = callsite.format_stack(rec.stack)
    elif isinstance(rec, Busy):
        row.update(
            kind="busy",
            ts=rec.wall,
            classification=rec.classification,
            duration_ms=_ms(rec.dur),
            wait_ms=_ms(rec.wait),
            error_code=rec.code,
            error_name=rec.name,
            message=rec.message,
            sql=_clip(rec.sql, limits.sql),
            fingerprint=_fingerprint(rec.sql, limits.sql),
            stmt_class=rec.stmt_class,
            call_site=callsite.format(rec.site),
        )
        _blocker(row, rec.blocker, rec.split, rec.end)
        row["user_stack"] = callsite.format_stack(rec.stack)
        row["txn_reads"] = _reads(rec.reads)
    elif isinstance(rec, Transaction):
        row.update(
            kind="transaction",
            ts=rec.wall,
            duration_ms=_ms(rec.dur),
            wait_ms=_ms(rec.wait) if rec.wait else None,
            hold_ms=_ms(rec.hold),
            begin_mode=rec.mode,
            end=rec.end,
            call_site=callsite.format(rec.site),
            lock_ts=rec.lock_wall,
            lock_sql=_clip(rec.lock_sql, limits.sql),
            lock_call_site=callsite.format(rec.lock_site),
            statements=rec.statements,
            user_stack=callsite.format_stack(rec.stack),
            txn_reads=_reads(rec.reads),
        )
    else:
        raise TypeError(f"no event row for {type(rec).__name__}")
    return row


def _reads(reads: Reads) -> str | None:
    if not reads:
        return None
    return json.dumps(
        [
            {"call_site": callsite.format(site), "ts": round(wall, 6), "ms": round(sec * 1e3, 3)}
            for wall, sec, site in reads
        ],
        ensure_ascii=False,
    )


def _blocker(row: dict[str, Any], b: Blocker | None, split: Split, end: float) -> None:
    """The blocker columns of a wait or busy error, and the split of its wait."""
    if b is None:
        b = Blocker("outside", None, None, None, None, "outside", "outside", None, False)
    row["blocker_pid"] = b.pid
    row["blocker_call_site"] = b.call_site
    row["blocker_context"] = b.context
    row["blocker_thread"] = b.thread
    row["blocker_held_ms"] = None if b.since is None else round(max(end - b.since, 0.0) * 1000.0, 3)
    row["blockers"] = len(split) if split else 1
    row["blocker_same_thread"] = 1 if b.same_thread else 0
    if split:
        row["blocker_split"] = json.dumps(
            [
                {"blocker": s.label(), "kind": s.kind, "pid": s.pid, "ms": round(sec * 1000.0, 3)}
                for s, sec in sorted(split, key=lambda e: -e[1])
            ],
            ensure_ascii=False,
        )


_fingerprints: dict[str, str] = {}


def _fingerprint(sql: str, limit: int) -> str | None:
    fp = _fingerprints.get(sql)
    if fp is None:
        fp = _clip(fingerprint(sql), limit) or ""
        if len(_fingerprints) >= 4096:
            _fingerprints.clear()
        if len(sql) <= 8192:
            _fingerprints[sql] = fp
    return fp
