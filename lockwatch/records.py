"""Raw records: what capture appends to the buffer.

They hold references and numbers only, so the query path stays cheap. The
flusher turns each into a full event row (``events.row``) off that path:
formatting call sites, fingerprints, context labels and thread names there.
"""

from __future__ import annotations

import os
import threading
from typing import Any, NamedTuple

from . import callsite, events
from .callsite import RawSite
from .context import Context
from .sql import fingerprint


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


class Wait(NamedTuple):
    origin: Origin
    who: Who
    wall: float
    wait: float
    outcome: str
    sql: str
    stmt_class: str
    site: RawSite | None
    window: tuple[float, float]  # when a blocker must have held the lock


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
    window: tuple[float, float]


class Lock(NamedTuple):
    """The write lock was taken; written to the store's holds at once."""

    origin: Origin
    who: Who
    key: str
    wall: float
    sql: str
    site: RawSite | None


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


class Request(NamedTuple):
    who: Who
    wall: float
    dur: float
    status: int | None


Record = Query | Wait | Busy | Lock | Transaction | Request


def _label(ctx: Context | str) -> str:
    return ctx if isinstance(ctx, str) else ctx.label


def _who_fields(who: Who) -> dict[str, Any]:
    ctx = who.ctx
    fields: dict[str, Any] = {
        "thread": who.thread.name,
        "thread_id": who.thread.ident,
        "context": _label(ctx),
        "task": who.task,
    }
    if isinstance(ctx, Context):
        fields.update(
            request_id=ctx.request_id,
            method=ctx.method,
            path=ctx.path,
            view=ctx.view,
            task=who.task or ctx.task,
        )
    return fields


def _origin_fields(o: Origin) -> dict[str, Any]:
    return {
        "pid": o.pid,
        "alias": o.alias,
        "db": o.db,
        "conn_id": o.conn_id,
        "capture_mode": o.mode,
    }


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
    """The schema row for one raw record."""
    if isinstance(rec, Request):
        ctx = rec.who.ctx
        extra: dict[str, Any] = {}
        if isinstance(ctx, Context):
            extra = {
                "queries": ctx.queries,
                "db_ms": _ms(ctx.db_time),
                "wait_ms": _ms(ctx.wait_time),
                "busy_count": ctx.busy,
            }
        return events.row(
            kind="request",
            ts=rec.wall,
            duration_ms=_ms(rec.dur),
            status=rec.status,
            **extra,
            **_who_fields(rec.who),
            pid=os.getpid(),
        )
    common = {**_origin_fields(rec.origin), **_who_fields(rec.who)}
    if isinstance(rec, Query):
        return events.row(
            kind="query",
            ts=rec.wall,
            duration_ms=_ms(rec.dur),
            wait_ms=_ms(rec.wait) if rec.wait else None,
            hold_ms=_ms(rec.hold),
            sql=_clip(rec.sql, limits.sql),
            fingerprint=_clip(fingerprint(rec.sql), limits.sql),
            stmt_class=rec.stmt_class,
            rows=rec.rows,
            params=_params_text(rec.params, limits.params),
            call_site=callsite.format(rec.site),
            **common,
        )
    if isinstance(rec, Wait):
        return events.row(
            kind="wait",
            ts=rec.wall,
            duration_ms=_ms(rec.wait),
            wait_ms=_ms(rec.wait),
            outcome=rec.outcome,
            sql=_clip(rec.sql, limits.sql),
            fingerprint=_clip(fingerprint(rec.sql), limits.sql),
            stmt_class=rec.stmt_class,
            call_site=callsite.format(rec.site),
            **common,
        )
    if isinstance(rec, Busy):
        return events.row(
            kind="busy",
            ts=rec.wall,
            classification=rec.classification,
            duration_ms=_ms(rec.dur),
            wait_ms=_ms(rec.wait),
            error_code=rec.code,
            error_name=rec.name,
            message=rec.message,
            sql=_clip(rec.sql, limits.sql),
            fingerprint=_clip(fingerprint(rec.sql), limits.sql),
            stmt_class=rec.stmt_class,
            call_site=callsite.format(rec.site),
            **common,
        )
    if isinstance(rec, Transaction):
        return events.row(
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
            **common,
        )
    raise TypeError(f"no event row for {type(rec).__name__}")
