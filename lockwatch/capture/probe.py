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
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from lockwatch import holders, pipeline
from lockwatch.capture import busyhandler, callsite, oslocks
from lockwatch.capture.busy import classify, is_lock_error, sqlite_error
from lockwatch.capture.callsite import RawSite, UserStack
from lockwatch.capture.context import CURRENT, default_label, task_name
from lockwatch.capture.holding import Holding
from lockwatch.capture.quick import Quick
from lockwatch.capture.records import Blocker, Busy, Origin, Query, Quiet, Wait, Who
from lockwatch.capture.statements import CLASSES as _classes
from lockwatch.capture.statements import statement_class
from lockwatch.capture.transactions import Returning, Transactions, Txn, may_lock
from lockwatch.conf import get_config

log = logging.getLogger("lockwatch")

T = TypeVar("T")


_conn_ids = itertools.count(1)
_perf = time.perf_counter
_wall = time.time
_current_thread = threading.current_thread
_tuple_new = tuple.__new__


# Every spelling: PRAGMA busy_timeout = N, PRAGMA main.busy_timeout(N), ...
_BUSY_TIMEOUT_SET = re.compile(r"busy_timeout\s*[=(]", re.IGNORECASE)
# Live probes, so a forked child can give its inherited connections a new identity.
_probes: weakref.WeakSet[Probe] = weakref.WeakSet()


def _sets_busy_timeout(sql: str) -> bool:
    return "busy_timeout" in sql.lower() and _BUSY_TIMEOUT_SET.search(sql) is not None


class Probe(Holding, Transactions, Quick):  # (parts with stubs of the others: last)
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
        # Writes and transactions under this, that nobody waited for, are only counted.
        self.hold_record = -1.0 if cfg.capture_queries == "all" else cfg.hold_record
        self.busy: busyhandler.BusyHandler | None = None
        self.handle: int | None = None
        if cfg.exact_waits:
            self.handle = busyhandler.raw_handle(conn)
        if self.handle is not None:
            self.busy = busyhandler.BusyHandler(self.handle, timeout, cfg.fast_handoff)
            self.busy.watch = self
            self.busy.install()
        mode = "exact" if self.busy is not None else "inferred"
        api = busyhandler.api() if self.handle is not None else None
        self._txn_state_fn = api.txn_state if api is not None else None
        self.origin = Origin(os.getpid(), alias, db, next(_conn_ids), mode)
        self.txn: Txn | None = None
        self._txn_seq = 0
        self._last_who: Who | None = None
        # The live holder table: this connection's slot says what it does to the lock.
        memory = db.startswith(":memory:")
        # A private in-memory database has no lock to share; a named shared one is
        # this process's own.
        self.table = None if db == ":memory:" else holders.table_for(cfg.store)
        if memory:
            db = f"{db}@{os.getpid()}"
        if self.table is None and not memory:
            pipeline.capture_failed(OSError(f"no holder table for the store {cfg.store}"))
        self.key = holders.db_key(db)
        self.locks = oslocks.file_locks(db)
        self.slot: holders.Slot | None = None
        self._marked = False  # the slot says this connection may hold the lock
        self._marks = 0
        self._wal: bool | None = None
        # The current wait, as the busy handler saw it.
        self._seen: Blocker | None = None
        self._split: dict[tuple[Any, ...], list[Any]] = {}
        self._reader_wait = 0.0  # seconds this connection held the lock and waited for readers
        self._gap = 0.0  # seconds slept when nobody was seen holding, not yet charged
        self._gap_since = 0.0
        self._returning: Returning | None = None
        _probes.add(self)

    def _txn_state(self) -> int:
        return self._txn_state_fn(self.handle, None) if self._txn_state_fn else -1

    # -- the statement path ---------------------------------------------------

    def run(self, execute: Callable[[str, Any], T], sql: str, arg: Any, many: bool = False) -> T:
        """``execute(sql, arg)``, captured. ``arg`` is the params, or a params list if many."""
        __tracebackhide__ = True  # pytest shows the app's line, not this one
        ctx = CURRENT.get()
        if ctx is not None and ctx.quiet:
            return execute(sql, arg)
        if self._returning is not None:
            self._safe(self._settle_returning, None)
        busy = self.busy
        if busy is not None and busy.calls:
            busy.reset()
            self._new_wait()
        cls = _classes.get(sql)  # None until statement_class() has seen it
        site = None
        txn = self.txn
        marks = self._marks
        wall = _wall()
        if cls != "read" and self.table is not None and (txn is None or txn.lock_wall is None):
            # A statement that may take the write lock says so first, so a waiter
            # in any process sees who is about to hold it (or is holding it).
            try:
                site = self._mark(sql, ctx, cls, wall)
            except Exception as exc:
                pipeline.capture_failed(exc)
        t0 = _perf()
        try:
            result = execute(sql, arg)
        except BaseException as exc:
            interrupt = self._interrupt(busy)
            params = None if many or not arg else arg
            self._safe(
                self._after, sql, params, wall, t0, _perf(), interrupt or exc, None, None, site
            )
            if interrupt is not None:
                raise interrupt.with_traceback(interrupt.__traceback__) from None
            raise
        t1 = _perf()
        if self._wal is None:
            self._safe(self._learn_wal, sql)
        if self.fast_reads and (busy is None or not busy.calls):
            if self._marks == marks:
                # Most statements need only counting: quick reads that did not wait,
                # and quick statements of a transaction that already holds the lock.
                # (A statement that marked the holder table goes on: its slot changes.)
                if t1 - t0 < self.slow:
                    if self._counted(sql, cls, wall, t0, t1, ctx):
                        return result
                    if cls == "begin" and txn is None and self._began(sql, wall, t0, t1, ctx):
                        return result
            elif cls == "write" or cls == "ddl":
                try:
                    if txn is None:
                        # An autocommit write that did not wait: most often quiet.
                        if self._quick_write(sql, arg, many, cls, site, wall, t0, t1, ctx):
                            return result
                    elif t1 - t0 < self.slow and self._first_write(
                        sql, txn, site, wall, t0, t1, ctx
                    ):
                        return result
                except Exception as exc:
                    pipeline.capture_failed(exc)
                    return result
        params = None if many or not arg else arg
        self._safe(self._after, sql, params, wall, t0, t1, None, None, result, site)
        return result

    def commit(self, do: Callable[[], None]) -> None:
        __tracebackhide__ = True  # pytest shows the app's line, not this one
        self._end_through(do, "COMMIT", "commit")

    def rollback(self, do: Callable[[], None]) -> None:
        __tracebackhide__ = True  # pytest shows the app's line, not this one
        self._end_through(do, "ROLLBACK", "rollback")

    def fetched(self, exc: BaseException | None = None) -> None:
        """A cursor fetched: a statement that held the lock past execute() may be over."""
        if self._returning is not None:
            try:
                self._settle_returning(exc)
            except Exception as failure:  # lockwatch's own failure: never the app's
                pipeline.capture_failed(failure)

    def closing(self) -> None:
        """The connection is about to close: an open transaction never ended."""
        if self._returning is not None:
            self._safe(self._settle_returning, None)
        self._safe(self._close_txn, "abandoned")
        self._safe(self._mark_close)

    def closed(self) -> None:
        self._safe(self._release_slot)

    # -- internals ------------------------------------------------------------

    def _safe(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # lockwatch's own failure: never the app's
            pipeline.capture_failed(exc)

    @staticmethod
    def _interrupt(busy: busyhandler.BusyHandler | None) -> BaseException | None:
        """Ctrl-C or sys.exit() during a wait: that is raised, not 'database is locked'."""
        if busy is None or busy.interrupted is None:
            return None
        interrupt, busy.interrupted = busy.interrupted, None
        return interrupt

    def failed(self) -> None:
        pipeline.counters.capture_errors += 1

    def _who(self) -> Who:
        ctx: Any = CURRENT.get()
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
        __tracebackhide__ = True  # pytest shows the app's line, not this one
        if self._returning is not None:
            self._safe(self._settle_returning, None)
        busy = self.busy
        if busy is not None and busy.calls:
            busy.reset()
            self._new_wait()
        wall = _wall()
        t0 = _perf()
        try:
            do()
        except BaseException as exc:
            interrupt = self._interrupt(busy)
            self._safe(self._after, sql, None, wall, t0, _perf(), interrupt or exc)
            if interrupt is not None:
                raise interrupt.with_traceback(interrupt.__traceback__) from None
            raise
        t1 = _perf()
        txn = self.txn
        if (
            txn is not None and self.fast_reads and t1 - t0 < self.slow
            and (busy is None or not busy.calls) and self._returning is None
            and not self.conn.in_transaction
        ):  # fmt: skip
            # The common end: a quick COMMIT (or ROLLBACK) that did not wait.
            try:
                self._quick_end(txn, t0, t1, end, CURRENT.get())
            except Exception as exc:
                pipeline.capture_failed(exc)
            return
        self._safe(self._after, sql, None, wall, t0, t1, None, end)

    def _waited(self) -> tuple[float, bool, int]:
        busy = self.busy
        if busy is None or not busy.calls:
            return 0.0, False, 0
        return busy.waited(), busy.gave_up, busy.calls

    # -- after a statement ----------------------------------------------------

    def _after(
        self, sql: str, params: Any, wall: float, t0: float, t1: float,
        exc: BaseException | None, end: str | None = None, result: Any = None,
        site0: RawSite | None = None,
    ) -> None:  # fmt: skip
        """The general path: a statement that waited, failed, was slow, or is rare."""
        cls = statement_class(sql)
        dur = t1 - t0
        waited, gave_up, calls = self._waited()
        ctx = CURRENT.get()
        if ctx is not None:
            ctx.queries += 1
            ctx.db_time += dur
            ctx.wait_time += waited
        sites = callsite.Lazy(site0)
        txn = self._txn_for(sql, cls, wall, t0, exc)
        if txn is not None:
            txn.statements += 1
            txn.wait += waited
            if cls == "read" and txn.lock_wall is None and exc is None:
                txn.read(wall, dur, sites.site())
        who: Who | None = None
        if waited > 0.0:
            who = self._emit_wait(sql, cls, wall, waited, gave_up, sites)
        if exc is not None:
            exc = sqlite_error(exc)
        if exc is not None and is_lock_error(exc):
            who = who or self._who()
            self._busy(
                exc, txn, sql, cls, sites.site, sites.stack, wall, dur, waited, gave_up, calls,
                who, ctx,
            )  # fmt: skip
        hold, quiet = self._lock_after(
            txn, sql, params, cls, exc, sites, wall, t0, dur, waited, who
        )
        if not quiet:
            self._record_query(
                sql, params, wall, dur, cls, exc, waited, hold, result, sites.site, who
            )  # fmt: skip
        self._finish(sql, cls, exc, txn, end, t1)

    def _emit_wait(
        self, sql: str, cls: str, wall: float, waited: float, gave_up: bool, sites: callsite.Lazy
    ) -> Who:  # fmt: skip
        who = self._who()
        blocker, split = self._blame(None)
        walked = sites.stack()
        pipeline.emit(
            Wait(
                self.origin, who, wall, waited, "gave_up" if gave_up else "acquired",
                sql, cls, sites.site(), blocker, split, wall + waited, walked,
            )
        )  # fmt: skip
        return who

    def _lock_after(
        self, txn: Txn | None, sql: str, params: Any, cls: str, exc: BaseException | None,
        sites: callsite.Lazy, wall: float, t0: float, dur: float, waited: float, who: Who | None,
    ) -> tuple[float | None, bool]:  # fmt: skip
        """What the statement did to the write lock: (an autocommit write's hold, and
        whether it was quiet: counted with its call site and hold, not an event)."""
        # Waiting for readers happens with the lock held: it is part of the hold.
        before_lock = max(waited - self._reader_wait, 0.0)
        if txn is not None:
            if txn.lock_wall is None and exc is None and may_lock(cls, sql, txn.mode):
                self._maybe_locked(txn, sql, cls, sites.site, wall, t0, before_lock, who)
            return None, False
        if exc is not None or cls not in ("write", "ddl"):
            return None, False
        if self._txn_state() == busyhandler.SQLITE_TXN_WRITE:
            # INSERT ... RETURNING: the lock stays held until the statement is
            # reset, when its rows are fetched; the hold is recorded then.
            self._returning = Returning(
                self.origin, who or self._who(), wall, dur, sql,
                params if self.capture_params else None, cls, sites.site(), waited,
                t0 + before_lock, wall + before_lock,
            )  # fmt: skip
            if self._marked and self.slot is not None:
                self.slot.set_since(holders.HOLDING, wall + before_lock)
            if self.busy is not None and self.busy.calls:
                # This wait is recorded; a wait inside the fetch is a new one.
                self.busy.reset()
                self._new_wait()
            return None, False
        hold = max(dur - before_lock, 0.0)
        if self._marked and self.slot is not None and self.table is not None:
            self.table.wrote(self.slot)
        if self._quiet(waited, hold):
            pipeline.emit(_tuple_new(Quiet, (self.origin, sites.site(), wall, hold, None, None)))
            return hold, True
        return hold, False

    def _finish(
        self, sql: str, cls: str, exc: BaseException | None, txn: Txn | None, end: str | None,
        t1: float,
    ) -> None:  # fmt: skip
        """After the records: a new busy timeout, the slot's state, a transaction's end."""
        if cls == "pragma" and exc is None and _sets_busy_timeout(sql):
            self.busy_timeout_changed()
        if self._returning is None:
            self._slot_after(txn.lock_wall if txn is not None else None)
        if self.txn is not None and not self.conn.in_transaction:
            if end is None:
                end = "rollback" if cls == "rollback" else ("error" if exc else "commit")
            self._close_txn(end, t1)

    def _busy(
        self, exc: BaseException, txn: Txn | None, sql: str, cls: str, site: Callable[[], Any],
        stack: Callable[[], UserStack], wall: float, dur: float, waited: float, gave_up: bool,
        calls: int, who: Who, ctx: Any,
    ) -> None:  # fmt: skip
        code = getattr(exc, "sqlite_errorcode", None)
        if self.handle is not None:
            read_txn = self._txn_state() == busyhandler.SQLITE_TXN_READ
        else:
            read_txn = txn is not None and txn.lock_wall is None and self.conn.in_transaction
        classification = classify(
            code, gave_up=gave_up, calls=calls, read_txn=read_txn, dur=dur,
            timeout=self.timeout, exact=self.busy is not None,
        )  # fmt: skip
        if ctx is not None:
            ctx.busy += 1
        blocker: Blocker | None
        split: tuple[tuple[Blocker, float], ...]
        if classification == "snapshot":
            blocker, split = self._last_writer(txn), ()
        else:
            blocker, split = self._blame(wall)
        walked = stack()
        if txn is not None:
            txn.failed = True
        pipeline.emit(
            Busy(
                self.origin, who, wall, dur, waited, classification, code,
                getattr(exc, "sqlite_errorname", None), str(exc), sql, cls, site(),
                blocker, split, wall + dur, walked, tuple(txn.reads) if txn is not None else (),
            )
        )  # fmt: skip

    def _record_query(
        self, sql: str, params: Any, wall: float, dur: float, cls: str,
        exc: BaseException | None, waited: float, hold: float | None, result: Any,
        site: Callable[[], Any], who: Who | None,
    ) -> None:  # fmt: skip
        mode = self.capture_queries
        if hold is not None or (
            mode != "none" and (mode == "all" or exc is not None or waited or dur >= self.slow)
        ):
            if self._returning is not None and exc is None and hold is None:
                return  # recorded when the statement lets go of the lock
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

    def _forked(self) -> None:
        """In a forked child: this inherited connection is a new one here."""
        o = self.origin
        self.origin = Origin(os.getpid(), o.alias, o.db, next(_conn_ids), o.mode)
        self._txn_seq = 0
        self.slot = None
        self._marked = False
        self._returning = None
        txn = self.txn
        if txn is not None:
            self._txn_seq += 1
            txn.key = f"{self.origin.pid}:{self.origin.conn_id}:{self._txn_seq}"

    def busy_timeout_changed(self) -> None:
        """A ``PRAGMA busy_timeout`` replaced our handler: adopt its value and reinstall."""
        ms = sqlite3.Connection.execute(self.conn, "PRAGMA busy_timeout").fetchone()[0]
        self.timeout = ms / 1000.0
        if self.busy is not None:
            self.busy.timeout = self.timeout
            self.busy.install()


def effective_timeout(conn: sqlite3.Connection) -> float:
    """The busy timeout SQLite has now, in seconds."""
    # Through the base class, so an instrumented connection does not record it.
    ms: int = sqlite3.Connection.execute(conn, "PRAGMA busy_timeout").fetchone()[0]
    return ms / 1000.0


def attach(conn: sqlite3.Connection, alias: str, db: str) -> Probe | None:
    """A probe for a new connection, or None when capture is off or fails."""
    try:
        if not get_config().enabled:
            return None
        return Probe(conn, alias, db, effective_timeout(conn))
    except Exception as exc:
        pipeline.capture_failed(exc)
        return None


def _after_fork() -> None:
    for probe in list(_probes):
        probe._forked()


os.register_at_fork(after_in_child=_after_fork)
