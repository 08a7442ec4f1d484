"""Capture: statements, transactions, lock waits and busy errors on one connection.

A ``Probe`` sits on each DB-API connection. The backend (and
``instrument_sqlite3``) call it around every statement, commit and rollback.
It only appends raw records to the buffer; anything that goes wrong inside it
is counted and logged once, and the app's own exception is re-raised untouched.
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from . import callsite, handle, pipeline
from .conf import get_config
from .context import _current, default_label, task_name
from .records import Busy, Lock, Origin, Query, Transaction, Wait, Who
from .sql import _cache as _classes
from .sql import begin_mode, statement_class

log = logging.getLogger("lockwatch")

T = TypeVar("T")

SQLITE_BUSY, SQLITE_LOCKED, SQLITE_BUSY_SNAPSHOT = 5, 6, 517

_conn_ids = itertools.count(1)
_perf = time.perf_counter
_wall = time.time
_current_thread = threading.current_thread
_tuple_new = tuple.__new__
# Statements that change nothing lockwatch tracks once a transaction holds the lock.
_IN_TRANSACTION = frozenset({"write", "ddl", "begin", "commit", "rollback"})


def _may_lock(cls: str, sql: str, mode: str) -> bool:
    """Could this statement have taken the write lock? (Asking SQLite costs a C call.)"""
    if cls == "read":
        return False
    if cls in ("commit", "rollback"):
        return False
    if cls == "begin":
        # SAVEPOINT and a deferred BEGIN take no lock; BEGIN IMMEDIATE does.
        return mode != "deferred" and sql.lstrip()[:5].upper() == "BEGIN"
    return True


class _Txn:
    __slots__ = (
        "key", "wall", "start", "mode", "site", "statements", "lock_wall", "lock_start",
        "lock_sql", "lock_site", "wait",
    )  # fmt: skip

    def __init__(self, key: str, wall: float, start: float, mode: str, site: Any) -> None:
        self.key = key
        self.wall = wall
        self.start = start
        self.mode = mode
        self.site = site
        self.statements = 0
        self.lock_wall: float | None = None
        self.lock_start: float | None = None
        self.lock_sql: str | None = None
        self.lock_site: Any = None
        self.wait = 0.0


def classify(
    code: int | None, *, gave_up: bool, calls: int, read_txn: bool, dur: float, timeout: float,
    exact: bool,
) -> str:  # fmt: skip
    """timeout, upgrade, snapshot, locked or other, for one busy error."""
    if code == SQLITE_BUSY_SNAPSHOT:
        return "snapshot"
    primary = None if code is None else code & 0xFF
    if primary == SQLITE_LOCKED:
        return "locked"
    if primary != SQLITE_BUSY:
        return "other"
    if exact:
        if gave_up:
            return "timeout"
        if calls == 0 and read_txn:
            # SQLite skips the busy handler when waiting could deadlock.
            return "upgrade"
        return "other"
    if timeout and dur >= 0.95 * timeout:
        return "timeout"
    if read_txn and dur < min(0.05 * timeout, 0.05):
        return "upgrade"
    return "other"


def sqlite_error(exc: BaseException) -> BaseException:
    """The sqlite3 error itself; Django's wrapper keeps it as ``__cause__``."""
    if not hasattr(exc, "sqlite_errorcode") and isinstance(exc.__cause__, sqlite3.Error):
        return exc.__cause__
    return exc


def is_lock_error(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)
    msg = str(exc)
    return msg.startswith(("database is locked", "database table is locked"))


class Probe:
    """Per-connection capture state."""

    def __init__(self, conn: sqlite3.Connection, alias: str, db: str, timeout: float) -> None:
        cfg = get_config()
        self.conn = conn
        self.timeout = timeout
        self.capture_queries = cfg.capture_queries
        self.slow = cfg.slow_query
        # Fast reads need only counting, unless every statement is wanted.
        self.fast_reads = cfg.capture_queries != "all"
        self.capture_params = cfg.capture_params
        self.busy: handle.BusyHandler | None = None
        self.handle: int | None = None
        if cfg.exact_waits:
            self.handle = handle.raw_handle(conn)
        if self.handle is not None:
            self.busy = handle.BusyHandler(self.handle, timeout, cfg.fast_handoff)
            self.busy.install()
        mode = "exact" if self.busy is not None else "inferred"
        api = handle.api() if self.handle is not None else None
        self._txn_state_fn = api.txn_state if api is not None else None
        self.origin = Origin(os.getpid(), alias, db, next(_conn_ids), mode)
        self.txn: _Txn | None = None
        self._txn_seq = 0
        self._last_who: Who | None = None

    def _txn_state(self) -> int:
        return self._txn_state_fn(self.handle, None) if self._txn_state_fn else -1

    # -- the statement path ---------------------------------------------------

    def run(self, execute: Callable[[str, Any], T], sql: str, arg: Any, many: bool = False) -> T:
        """``execute(sql, arg)``, captured. ``arg`` is the params, or a params list if many."""
        ctx = _current.get()
        if ctx is not None and ctx.quiet:
            return execute(sql, arg)
        params = None if many or not arg else arg
        busy = self.busy
        if busy is not None and busy.calls:
            busy.reset()
        wall = _wall()
        t0 = _perf()
        try:
            result = execute(sql, arg)
        except BaseException as exc:
            self._safe(self._after, sql, params, wall, t0, _perf(), exc)
            raise
        t1 = _perf()
        # Most statements need only counting: quick reads that did not wait, and
        # quick statements of a transaction that already holds the write lock.
        if self.fast_reads and t1 - t0 < self.slow and (busy is None or not busy.calls):
            cls = _classes.get(sql)
            txn = self.txn
            if cls == "read" or (
                cls in _IN_TRANSACTION
                and txn is not None
                and txn.lock_wall is not None
                and self.conn.in_transaction
            ):
                if ctx is not None:
                    ctx.queries += 1
                    ctx.db_time += t1 - t0
                if txn is not None:
                    txn.statements += 1
                return result
        self._safe(self._after, sql, params, wall, t0, t1, None, None, result)
        return result

    def commit(self, do: Callable[[], None]) -> None:
        self._end_through(do, "COMMIT", "commit")

    def rollback(self, do: Callable[[], None]) -> None:
        self._end_through(do, "ROLLBACK", "rollback")

    def closing(self) -> None:
        """The connection is closing: an open transaction never ended."""
        self._safe(self._close_txn, "abandoned")

    # -- internals ------------------------------------------------------------

    def _safe(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # lockwatch's own failure: never the app's
            pipeline.capture_failed(exc)

    def _who(self) -> Who:
        ctx: Any = _current.get()
        if ctx is None:
            ctx = default_label()
        thread = _current_thread()
        task = task_name()
        who = self._last_who
        # Most statements come from the same thread and context as the last one.
        if who is None or who[0] is not thread or who[1] != ctx or who[2] != task:
            who = self._last_who = _tuple_new(Who, (thread, ctx, task))
        return who

    def _end_through(self, do: Callable[[], None], sql: str, end: str) -> None:
        busy = self.busy
        if busy is not None and busy.calls:
            busy.reset()
        wall = _wall()
        t0 = _perf()
        try:
            do()
        except BaseException as exc:
            self._safe(self._after, sql, None, wall, t0, _perf(), exc)
            raise
        self._safe(self._after, sql, None, wall, t0, _perf(), None, end)

    def _waited(self) -> tuple[float, bool, int]:
        busy = self.busy
        if busy is None or not busy.calls:
            return 0.0, False, 0
        return busy.waited(), busy.gave_up, busy.calls

    def _after(
        self, sql: str, params: Any, wall: float, t0: float, t1: float,
        exc: BaseException | None, end: str | None = None, result: Any = None,
    ) -> None:  # fmt: skip
        cls = statement_class(sql)
        dur = t1 - t0
        waited, gave_up, calls = self._waited()
        ctx = _current.get()
        if ctx is not None:
            ctx.queries += 1
            ctx.db_time += dur
            ctx.wait_time += waited
        # The call site is found only when something is recorded: walking frames
        # for every statement of a transaction would cost more than the rest.
        found: list[Any] = []

        def site() -> Any:
            if not found:
                found.append(callsite.find(2))
            return found[0]

        txn = self.txn
        who: Who | None = None

        if cls == "begin" and txn is None and exc is None and sql.lstrip()[:5].upper() == "BEGIN":
            txn = self._open_txn(wall, t0, begin_mode(sql) or "deferred")
        elif txn is None and exc is None and self.conn.in_transaction:
            # The sqlite3 module began a transaction implicitly.
            txn = self._open_txn(wall, t0, "deferred")
        if txn is not None:
            txn.statements += 1
            txn.wait += waited

        if waited > 0.0:
            who = self._who()
            pipeline.emit(
                Wait(
                    self.origin, who, wall, waited, "gave_up" if gave_up else "acquired",
                    sql, cls, site(), (wall, wall + dur),
                )
            )  # fmt: skip

        if exc is not None:
            exc = sqlite_error(exc)
        if exc is not None and is_lock_error(exc):
            who = who or self._who()
            code = getattr(exc, "sqlite_errorcode", None)
            if self.handle is not None:
                read_txn = self._txn_state() == handle.SQLITE_TXN_READ
            else:
                read_txn = txn is not None and txn.lock_wall is None and self.conn.in_transaction
            classification = classify(
                code, gave_up=gave_up, calls=calls, read_txn=read_txn, dur=dur,
                timeout=self.timeout, exact=self.busy is not None,
            )  # fmt: skip
            if ctx is not None:
                ctx.busy += 1
            window = (wall, wall + dur)
            if classification == "snapshot" and txn is not None:
                window = (txn.wall, wall + dur)
            pipeline.emit(
                Busy(
                    self.origin, who, wall, dur, waited, classification, code,
                    getattr(exc, "sqlite_errorname", None), str(exc), sql, cls, site(), window,
                )
            )  # fmt: skip

        hold = None
        if txn is not None:
            if txn.lock_wall is None and exc is None and _may_lock(cls, sql, txn.mode):
                self._maybe_locked(txn, sql, cls, site, wall, t0, waited, who)
        elif exc is None and cls in ("write", "ddl"):
            hold = max(dur - waited, 0.0)

        mode = self.capture_queries
        if hold is not None or (
            mode != "none" and (mode == "all" or exc is not None or waited or dur >= self.slow)
        ):
            who = who or self._who()
            rows = None
            # RETURNING rows are counted only as they are fetched, after this.
            if cls == "write" and result is not None and " RETURNING " not in sql:
                rows = getattr(result, "rowcount", -1)
                rows = rows if rows >= 0 else None
            # tuple.__new__ skips NamedTuple's Python-level __new__: this runs per statement.
            pipeline.emit(
                _tuple_new(Query, (
                    self.origin, who, wall, dur, sql, params if self.capture_params else None,
                    cls, rows, site(), waited, hold,
                ))
            )  # fmt: skip

        if cls == "pragma" and exc is None and "busy_timeout" in sql.lower() and "=" in sql:
            self.busy_timeout_changed()

        if self.txn is not None and not self.conn.in_transaction:
            if end is None:
                end = "rollback" if cls == "rollback" else ("error" if exc else "commit")
            self._close_txn(end, t1)

    def _open_txn(self, wall: float, t0: float, mode: str) -> _Txn:
        view = getattr(_current.get(), "view_func", None)
        if view is None:
            site = callsite.find(2)
        else:
            # Reached from Django's handler without user code: ATOMIC_REQUESTS.
            site = callsite.find(2, stop=callsite.HANDLER_CODES) or callsite.of_function(view)
        self._txn_seq += 1
        o = self.origin
        txn = _Txn(f"{o.pid}:{o.conn_id}:{self._txn_seq}", wall, t0, mode, site)
        self.txn = txn
        return txn

    def _maybe_locked(
        self, txn: _Txn, sql: str, cls: str, site: Callable[[], Any], wall: float, t0: float,
        waited: float, who: Who | None,
    ) -> None:  # fmt: skip
        if self.handle is not None:
            locked = self._txn_state() == handle.SQLITE_TXN_WRITE
        else:
            locked = cls in ("write", "ddl") or (cls == "begin" and txn.mode != "deferred")
        if not locked:
            return
        txn.lock_start = t0 + waited
        txn.lock_wall = wall + waited
        txn.lock_sql = sql
        txn.lock_site = site()
        pipeline.emit(
            Lock(self.origin, who or self._who(), txn.key, txn.lock_wall, sql, txn.lock_site)
        )

    def _close_txn(self, end: str, t1: float | None = None) -> None:
        txn = self.txn
        if txn is None:
            return
        self.txn = None
        t1 = _perf() if t1 is None else t1
        hold = None if txn.lock_start is None else max(t1 - txn.lock_start, 0.0)
        pipeline.emit(
            Transaction(
                self.origin, self._who(), txn.key, txn.wall, t1 - txn.start, txn.mode, txn.site,
                end, txn.lock_wall, hold, txn.lock_sql, txn.lock_site, txn.statements, txn.wait,
            )
        )  # fmt: skip

    def busy_timeout_changed(self) -> None:
        """A ``PRAGMA busy_timeout = N`` replaced our handler: adopt N and reinstall."""
        ms = sqlite3.Connection.execute(self.conn, "PRAGMA busy_timeout").fetchone()[0]
        self.timeout = ms / 1000.0
        if self.busy is not None:
            self.busy.timeout = self.timeout
            self.busy.install()


def effective_timeout(conn: sqlite3.Connection) -> float:
    """The busy timeout SQLite has now, in seconds."""
    # Through the base class, so an instrumented connection does not record it.
    return sqlite3.Connection.execute(conn, "PRAGMA busy_timeout").fetchone()[0] / 1000.0


def attach(conn: sqlite3.Connection, alias: str, db: str) -> Probe | None:
    """A probe for a new connection, or None when capture is off or fails."""
    try:
        if not get_config().enabled:
            return None
        return Probe(conn, alias, db, effective_timeout(conn))
    except Exception as exc:
        pipeline.capture_failed(exc)
        return None
