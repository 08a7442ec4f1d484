"""A connection's transactions: when each began, took the write lock and ended.

``Transactions`` is a part of ``probe.Probe``: it opens a transaction at
``BEGIN`` (or when the sqlite3 module began one implicitly), marks the moment
it took the write lock, keeps the reads before that (an ``upgrade`` error's
cause), and emits the transaction when it ends. A write that holds the lock
past ``execute()`` (``INSERT ... RETURNING``) is settled here when it lets go.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from lockwatch import holders, pipeline
from lockwatch.capture import busyhandler, callsite
from lockwatch.capture.callsite import RawSite, UserStack
from lockwatch.capture.context import CURRENT
from lockwatch.capture.records import Blocker, Lock, Origin, Query, Quiet, Transaction, Wait, Who
from lockwatch.capture.statements import begin_mode

_perf = time.perf_counter
_wall = time.time
_tuple_new = tuple.__new__


class Returning(NamedTuple):
    """A write that still holds the lock after execute() (INSERT ... RETURNING)."""

    origin: Origin
    who: Who
    wall: float
    dur: float
    sql: str
    params: Any
    cls: str
    site: RawSite | None
    waited: float
    lock_start: float  # perf_counter
    lock_wall: float


def may_lock(cls: str, sql: str, mode: str) -> bool:
    """Could this statement have taken the write lock? (Asking SQLite costs a C call.)"""
    if cls == "read":
        return False
    if cls in ("commit", "rollback"):
        return False
    if cls == "begin":
        # SAVEPOINT and a deferred BEGIN take no lock; BEGIN IMMEDIATE does.
        return mode != "deferred" and sql.lstrip()[:5].upper() == "BEGIN"
    return True


READS_KEPT = 16


class Txn:
    __slots__ = (
        "key", "wall", "start", "mode", "site", "statements", "lock_wall", "lock_start",
        "lock_sql", "lock_site", "wait", "stack", "reads", "failed",
    )  # fmt: skip

    def __init__(
        self, key: str, wall: float, start: float, mode: str, site: Any, stack: UserStack
    ) -> None:
        self.key = key
        self.wall = wall
        self.start = start
        self.mode = mode
        self.site = site
        self.stack = stack
        self.statements = 0
        self.lock_wall: float | None = None
        self.lock_start: float | None = None
        self.lock_sql: str | None = None
        self.lock_site: Any = None
        self.wait = 0.0
        # Its reads before it tried to write (the first READS_KEPT): what an upgrade
        # error was caused by. Kept with a busy error, or a transaction that waited long.
        self.reads: list[tuple[float, float, RawSite | None]] = []
        self.failed = False  # a busy error ended one of its statements

    def read(self, wall: float, seconds: float, site: RawSite | None) -> None:
        if len(self.reads) < READS_KEPT:
            self.reads.append((wall, seconds, site))


class Transactions:
    """The transaction state of one connection (a part of ``probe.Probe``)."""

    conn: sqlite3.Connection
    origin: Origin
    txn: Txn | None
    handle: int | None
    busy: Any
    slow: float
    hold_record: float
    table: holders.Table | None
    slot: holders.Slot | None
    _txn_seq: int
    _returning: Returning | None
    _marked: bool

    def _txn_state(self) -> int:
        raise NotImplementedError

    def _who(self) -> Who:
        raise NotImplementedError

    def _waited(self) -> tuple[float, bool, int]:
        raise NotImplementedError

    def _blame(self, now: float | None) -> tuple[Blocker | None, tuple[tuple[Blocker, float], ...]]:
        raise NotImplementedError

    def _new_wait(self) -> None:
        raise NotImplementedError

    def _made_wait(self) -> bool:
        raise NotImplementedError

    def _quiet(self, waited: float, held: float) -> bool:
        """A write to count, not store (lockwatch.pipeline.quiet): it did not wait, held the lock
        (a transaction: lasted) under HOLD_RECORD_MS, and nobody waited behind it."""
        return not waited and held < self.hold_record and not self._made_wait()

    def _slot_after(self, lock_wall: float | None = None, state: int | None = None) -> None:
        raise NotImplementedError

    def _txn_for(
        self, sql: str, cls: str, wall: float, t0: float, exc: BaseException | None
    ) -> Txn | None:
        txn = self.txn
        if cls == "begin" and txn is None and exc is None and sql.lstrip()[:5].upper() == "BEGIN":
            return self._open_txn(wall, t0, begin_mode(sql) or "deferred")
        if txn is None and exc is None and self.conn.in_transaction:
            # The sqlite3 module began a transaction implicitly.
            return self._open_txn(wall, t0, "deferred")
        return txn

    def _settle_returning(self, exc: BaseException | None) -> None:
        """A statement that kept the lock after execute(): has it let go?"""
        r = self._returning
        if r is None:
            return
        state = self._txn_state()
        if exc is None and state == busyhandler.SQLITE_TXN_WRITE:
            return  # rows still to fetch: still held
        self._returning = None
        t = _perf()
        busy = self.busy
        if (
            exc is None and (busy is None or not busy.calls) and self._marked
            and self.slot is not None and self.table is not None
            and self._quiet(r.waited, t - r.lock_start)
        ):  # fmt: skip
            # The common end: a quiet write that did not wait inside its fetch either.
            # (What _slot_after does here: SQLite no longer holds the write lock.)
            slot = self.slot
            self.table.wrote(slot)
            pipeline.emit(
                _tuple_new(Quiet, (r.origin, r.site, r.wall, t - r.lock_start, None, None))
            )
            slot.set_state(holders.IDLE)
            self._marked = False
            return
        waited, gave_up, calls = self._waited()
        if waited > 0.0:
            # Its COMMIT waited for readers, inside the fetch.
            blocker, split = self._blame(None)
            pipeline.emit(
                Wait(
                    r.origin, r.who, _wall() - waited, waited,
                    "gave_up" if gave_up else "acquired", "COMMIT", "commit", r.site,
                    blocker, split, _wall(), (r.site,) if r.site else (),
                )
            )  # fmt: skip
            if self.busy is not None:
                self.busy.reset()
            self._new_wait()
        hold = max(t - r.lock_start, 0.0)
        if self._quiet(waited or r.waited, hold):
            pipeline.emit(_tuple_new(Quiet, (r.origin, r.site, r.wall, hold, None, None)))
        else:
            pipeline.emit(
                _tuple_new(Query, (
                    r.origin, r.who, r.wall, r.dur, r.sql, r.params, r.cls, None, r.site,
                    r.waited, hold,
                ))
            )  # fmt: skip
        if self._marked and self.slot is not None and self.table is not None:
            self.table.wrote(self.slot)
        self._slot_after(None, state)

    def _open_txn(self, wall: float, t0: float, mode: str) -> Txn:
        # The user's frames, innermost first (a request's end at its view): the
        # first is the call site, the rest say which view called a shared helper.
        stack = callsite.user_stack(2)
        site: RawSite | None
        if stack:
            site = stack[0]
        else:
            # Reached from Django's handler without user code: ATOMIC_REQUESTS.
            view = getattr(CURRENT.get(), "view_func", None)
            site = callsite.of_function(view) if view is not None else None
        self._txn_seq += 1
        o = self.origin
        txn = Txn(f"{o.pid}:{o.conn_id}:{self._txn_seq}", wall, t0, mode, site, stack)
        self.txn = txn
        return txn

    def _maybe_locked(
        self, txn: Txn, sql: str, cls: str, site: Callable[[], Any], wall: float, t0: float,
        before_lock: float, who: Who | None,
    ) -> None:  # fmt: skip
        if self.handle is not None:
            locked = self._txn_state() == busyhandler.SQLITE_TXN_WRITE
        else:
            locked = cls in ("write", "ddl") or (cls == "begin" and txn.mode != "deferred")
        if locked:
            self._locked(txn, sql, site(), wall + before_lock, t0 + before_lock, who)

    def _locked(
        self, txn: Txn, sql: str, site: RawSite | None, lock_wall: float, lock_start: float,
        who: Who | None,
    ) -> None:  # fmt: skip
        """``txn`` took the write lock, with ``sql``, at ``lock_wall``."""
        txn.lock_start = lock_start
        txn.lock_wall = lock_wall
        txn.lock_sql = sql
        txn.lock_site = site
        pipeline.emit(Lock(self.origin, who or self._who(), txn.key, lock_wall, sql, site))

    def _close_txn(self, end: str, t1: float | None = None) -> None:
        txn = self.txn
        if txn is None:
            return
        self.txn = None
        t1 = _perf() if t1 is None else t1
        hold = None if txn.lock_start is None else max(t1 - txn.lock_start, 0.0)
        dur = t1 - txn.start
        if end == "commit" and not txn.failed and self._quiet(txn.wait, dur):
            site = txn.lock_site if txn.lock_site is not None else txn.site
            pipeline.emit(_tuple_new(Quiet, (self.origin, site, txn.wall, hold, dur, txn.key)))
        else:
            reads = tuple(txn.reads) if txn.failed or txn.wait >= self.slow else ()
            pipeline.emit(
                Transaction(
                    self.origin, self._who(), txn.key, txn.wall, dur, txn.mode, txn.site, end,
                    txn.lock_wall, hold, txn.lock_sql, txn.lock_site, txn.statements, txn.wait,
                    txn.stack, reads,
                )
            )  # fmt: skip
        if self.table is not None and txn.lock_wall is not None and self.slot is not None:
            self.table.wrote(self.slot)
