"""Capture's fast paths: the statements that did not wait or fail.

``Quick`` is a part of ``probe.Probe``. Most statements are quick reads, quick
statements of a transaction that holds the lock, an autocommit write nobody waited
for, a deferred BEGIN or a quick COMMIT. Each has a path here that records exactly
what ``Probe._after`` would (tests/test_capture_fast_path.py runs both), with less
work: no statement classification, no closures, no second read of SQLite's state.
Each returns False, having done nothing, when its statement is not that simple.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from lockwatch import holders, pipeline
from lockwatch.capture import busyhandler, callsite
from lockwatch.capture.callsite import RawSite
from lockwatch.capture.records import Quiet, Who
from lockwatch.capture.statements import begin_mode
from lockwatch.capture.transactions import READS_KEPT, Returning, Txn

_tuple_new = tuple.__new__
# Statements that change nothing lockwatch tracks once a transaction holds the lock.
_IN_TRANSACTION = frozenset({"write", "ddl", "begin", "commit", "rollback"})


class Quick:
    """The fast paths of one connection (a part of ``probe.Probe``)."""

    conn: sqlite3.Connection
    origin: Any
    txn: Txn | None
    slot: holders.Slot | None
    table: holders.Table | None
    capture_params: bool
    _returning: Returning | None
    _marked: bool

    def _txn_state(self) -> int:
        raise NotImplementedError

    def _who(self) -> Who:
        raise NotImplementedError

    def _open_txn(self, wall: float, t0: float, mode: str) -> Txn:
        raise NotImplementedError

    def _locked(
        self, txn: Txn, sql: str, site: RawSite | None, lock_wall: float, lock_start: float,
        who: Who | None,
    ) -> None:  # fmt: skip
        raise NotImplementedError

    def _slot_after(self, lock_wall: float | None = None, state: int | None = None) -> None:
        raise NotImplementedError

    def _close_txn(self, end: str, t1: float | None = None) -> None:
        raise NotImplementedError

    def _quiet(self, waited: float, held: float) -> bool:
        raise NotImplementedError

    def _counted(
        self, sql: str, cls: str | None, wall: float, t0: float, t1: float, ctx: Any
    ) -> bool:  # fmt: skip
        """A quick read, or a quick statement of a transaction holding the lock: count it."""
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
                if cls == "read" and txn.lock_wall is None and len(txn.reads) < READS_KEPT:
                    txn.reads.append((wall, t1 - t0, callsite.find(2)))
            return True
        return False

    def _began(self, sql: str, wall: float, t0: float, t1: float, ctx: Any) -> bool:
        """``_after`` for a quick BEGIN that takes no lock (it did not mark the slot)."""
        if not self.conn.in_transaction or sql.lstrip()[:5].upper() != "BEGIN":
            return False  # (SAVEPOINT, or a BEGIN that failed to begin: _after decides)
        try:
            txn = self._open_txn(wall, t0, begin_mode(sql) or "deferred")
            txn.statements += 1
            if ctx is not None:
                ctx.queries += 1
                ctx.db_time += t1 - t0
        except Exception as exc:
            pipeline.capture_failed(exc)
        return True

    def _first_write(
        self, sql: str, txn: Txn, site: RawSite | None, wall: float, t0: float, t1: float,
        ctx: Any,
    ) -> bool:  # fmt: skip
        """``_after`` for a quick write of a transaction that did not hold the lock yet
        (it marked the slot), when it did not wait or fail."""
        slot = self.slot
        if slot is None or not self.conn.in_transaction:
            return False
        txn.statements += 1
        if ctx is not None:
            ctx.queries += 1
            ctx.db_time += t1 - t0
        state = self._txn_state()
        if state == busyhandler.SQLITE_TXN_WRITE or state < 0:  # (no handle: a write locks)
            self._locked(txn, sql, site, wall, t0, None)
        self._slot_after(txn.lock_wall, state)
        return True

    def _quick_write(
        self, sql: str, arg: Any, many: bool, cls: str, site: RawSite | None, wall: float,
        t0: float, t1: float, ctx: Any,
    ) -> bool:  # fmt: skip
        """``_after`` for an autocommit write that marked its slot and did not wait or
        fail, when it is quiet or still holds the lock (RETURNING); else False, and
        nothing done."""
        slot = self.slot
        if slot is None or self.conn.in_transaction:
            return False  # (the sqlite3 module began a transaction: _after opens it)
        dur = t1 - t0
        if self._txn_state() == busyhandler.SQLITE_TXN_WRITE:
            # INSERT ... RETURNING: the lock stays held until the statement is reset,
            # when its rows are fetched; the hold is recorded then.
            params = (None if many or not arg else arg) if self.capture_params else None
            self._returning = _tuple_new(Returning, (
                self.origin, self._who(), wall, dur, sql, params, cls, site, 0.0, t0, wall,
            ))  # fmt: skip
            slot.set_since(holders.HOLDING, wall)
        else:
            if not self._quiet(0.0, dur):
                return False
            table = self.table
            if table is not None:
                table.wrote(slot)
            pipeline.emit(_tuple_new(Quiet, (self.origin, site, wall, dur, None, None)))
            slot.set_state(holders.IDLE)
            self._marked = False
        if ctx is not None:
            ctx.queries += 1
            ctx.db_time += dur
        return True

    def _quick_end(self, txn: Txn, t0: float, t1: float, end: str, ctx: Any) -> None:
        """``_after`` for a quick COMMIT or ROLLBACK that did not wait and ended ``txn``."""
        if ctx is not None:
            ctx.queries += 1
            ctx.db_time += t1 - t0
        txn.statements += 1
        self._slot_after(txn.lock_wall)
        self._close_txn(end, t1)
