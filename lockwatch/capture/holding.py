"""This connection's side of the holder table: its slot, and what its waits were behind.

``Holding`` is a part of ``probe.Probe``. Before a statement that may take the
write lock the probe fills its slot (``_mark``); after it, the slot says holding
or idle. While SQLite waits, the busy handler calls ``poll`` and ``charge``: the
time slept goes to what the table (and the operating system's lock owner)
showed, and ``_blame`` turns that split into the wait's blocker.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any

from lockwatch import holders, pipeline
from lockwatch.capture import busyhandler, callsite, oslocks
from lockwatch.capture.callsite import RawSite
from lockwatch.capture.context import CURRENT, default_label
from lockwatch.capture.records import Blocker, Origin
from lockwatch.capture.statements import CLASSES as _classes
from lockwatch.capture.statements import begin_mode, statement_class

_wall = time.time
_current_thread = threading.current_thread

# Statements that may take the write lock: the holder table hears of them first.
_MAY_TAKE = frozenset({"write", "ddl", "other"})
_LOCKING_BEGIN = frozenset({"immediate", "exclusive"})
_TOUCH = frozenset({"read", "write", "ddl"})
_READERS = Blocker(holders.READERS, None, None, None, None, holders.READERS, holders.READERS,
                   None, False)  # fmt: skip
_BRIEF = Blocker(holders.WAL_READ, None, None, None, None, holders.WAL_READ,
                 holders.WAL_READ, None, False)  # fmt: skip
_OUTSIDE = Blocker(holders.OUTSIDE, None, None, None, None, holders.OUTSIDE, holders.OUTSIDE,
                   None, False)  # fmt: skip
_site_cache: dict[RawSite | None, bytes] = {}
# What a closing connection's slot shows where a statement's call site would be.
_CLOSE_SITE = b"closing the connection (WAL checkpoint)"


def _site_bytes(site: RawSite | None) -> bytes:
    data = _site_cache.get(site)
    if data is None:
        if len(_site_cache) >= 4096:
            _site_cache.clear()
        text = callsite.format(site) or ""
        data = _site_cache[site] = text.encode("utf-8", "backslashreplace")[:200]
    return data


# The slot's text fields, encoded once: labels, thread names and statements repeat.
_who_bytes: dict[tuple[str, str], tuple[bytes, bytes]] = {}
_statements: dict[str, bytes] = {}


def _encoded(text: str, limit: int) -> bytes:
    return text[:limit].encode("utf-8", "backslashreplace")[:limit]


def _names_bytes(names: tuple[str, str]) -> tuple[bytes, bytes]:
    """(context label, thread name) as the slot stores them."""
    if len(_who_bytes) >= 4096:
        _who_bytes.clear()
    data = _who_bytes[names] = (_encoded(names[0], 96), _encoded(names[1], 40))
    return data


def _statement_bytes(sql: str) -> bytes:
    data = _encoded(sql, 104)
    if len(sql) <= 4096:  # long ones are not kept: the cache stays small
        if len(_statements) >= 4096:
            _statements.clear()
        _statements[sql] = data
    return data


def _blocker(h: holders.Holder, same_thread: bool) -> Blocker:
    return Blocker(
        "holder", h.pid, h.conn_id, h.txn, h.thread or None, h.context or None,
        h.call_site or None, h.since, same_thread,
    )  # fmt: skip


class Holding:
    """The holder-table state of one connection (a part of ``probe.Probe``)."""

    conn: sqlite3.Connection
    origin: Origin
    txn: Any
    table: holders.Table | None
    key: int
    locks: oslocks.FileLocks | None
    slot: holders.Slot | None
    _marked: bool
    _marks: int
    _wal: bool | None  # the database is in WAL mode; None until its first statement
    _seen: Blocker | None
    _split: dict[tuple[Any, ...], list[Any]]
    _reader_wait: float
    _gap: float
    _gap_since: float

    def _txn_state(self) -> int:
        raise NotImplementedError

    def _mark(self, sql: str, ctx: Any, cls: str | None, wall: float) -> RawSite | None:
        """Fill this connection's slot before a statement that may take the lock.
        (``wall``: the statement's start; a hold taken without a wait starts then.)"""
        cls = cls or statement_class(sql)
        if cls not in _MAY_TAKE and not (cls == "begin" and begin_mode(sql) in _LOCKING_BEGIN):
            return None
        site = callsite.find(2)
        self._fill(holders.RUNNING, wall, sql, ctx, site)
        return site

    def _learn_wal(self, sql: str) -> None:
        """After the first statement that read the file: is it in WAL mode (its -wal
        exists while it is open)? Then the slot names this database from now on, even
        if this connection only reads: a WAL reader may hold the write lock for an
        instant."""
        if (_classes.get(sql) or statement_class(sql)) not in _TOUCH:
            return  # a PRAGMA or a BEGIN may not have opened the file yet
        locks = self.locks
        self._wal = locks is not None and os.path.exists(locks.path + "-wal")
        if self._wal and self.slot is None and self.table is not None:
            self._fill(holders.IDLE, 0.0, "", CURRENT.get(), None, b"", holders.BRIEF)

    def _mark_close(self) -> None:
        """Before the connection closes: the last one to close a WAL database
        checkpoints it and deletes the WAL, holding an exclusive lock."""
        if self.table is not None and self._wal:
            self._fill(
                holders.RUNNING, _wall(), "", CURRENT.get(), None, _CLOSE_SITE, holders.BRIEF
            )  # fmt: skip

    def _fill(
        self, state: int, since: float, sql: str, ctx: Any, site: RawSite | None,
        site_text: bytes | None = None, flag: int = 0,
    ) -> None:  # fmt: skip
        """Fill the slot (claimed on first use). A BRIEF slot is not this
        connection's mark: the statement after it decides nothing by it."""
        slot = self.slot
        if slot is None:
            table = self.table
            slot = self.slot = table.claim() if table is not None else None
            if slot is None:
                self.table = None  # full: this connection goes without
                pipeline.capture_failed(RuntimeError("the holder table is full"))
                return
        thread = _current_thread()
        names = (ctx.label if ctx is not None else default_label(), thread.name)
        who = _who_bytes.get(names) or _names_bytes(names)
        text = _statements.get(sql) or _statement_bytes(sql)
        if not flag:
            self._marks += 1
        slot.fill(
            state, self.key, self.origin.conn_id, thread.ident or 0, self._marks, since,
            who[0], _site_bytes(site) if site_text is None else site_text, who[1], text, flag,
        )  # fmt: skip
        if not flag:
            self._marked = True

    def _made_wait(self) -> bool:
        """Did a waiter find this connection in its way (since its last mark)?"""
        slot = self.slot
        return slot is not None and slot.made_wait()

    def _slot_after(self, lock_wall: float | None = None, state: int | None = None) -> None:
        """After a statement: the slot says holding, or idle. (``state``: SQLite's
        transaction state, when the caller has just read it.)"""
        slot = self.slot
        if slot is None or not self._marked:
            return
        if state is None:
            state = self._txn_state()
        if state < 0:  # no handle: a transaction that took the lock holds it
            held = self.txn is not None and self.txn.lock_wall is not None
        else:
            held = state == busyhandler.SQLITE_TXN_WRITE
        if held:
            if lock_wall is not None:
                slot.set_since(holders.HOLDING, lock_wall)
            else:
                slot.set_state(holders.HOLDING)
        else:
            slot.set_state(holders.IDLE)
            self._marked = False

    def _release_slot(self) -> None:
        slot, self.slot = self.slot, None
        self._marked = False
        if slot is not None:
            slot.table.release(slot)

    def _new_wait(self) -> None:
        self._seen = None
        self._split = {}
        self._reader_wait = 0.0
        self._gap = 0.0
        self._gap_since = 0.0

    def poll(self, delay: float) -> None:
        """From the busy handler, before it sleeps: who is in the way right now?"""
        now = _wall()
        if self._txn_state() == busyhandler.SQLITE_TXN_WRITE:
            # This connection holds the lock and waits (a COMMIT, or a statement
            # spilling its cache) for read transactions to finish.
            self._settle_gap(_READERS)
            self._seen = _READERS
            if not self._marked and self.table is not None:
                self._fill(holders.COMMITTING, now, "", CURRENT.get(), callsite.find(2))
            if self._marked and self.slot is not None:
                self.slot.waiting(holders.COMMITTING, now + delay)
            return
        seen = self._seen = self._look()
        if self._gap:
            self._settle_gap(seen)
        if self._marked and self.slot is not None:
            self.slot.waiting(holders.WAITING, now + delay)

    def charge(self, seconds: float) -> None:
        """From the busy handler, after it slept: that time goes to what was in the way.

        Only arithmetic here: right after a sleep the caches are cold, and a look at
        the table would cost ten times what it costs in ``poll``.
        """
        seen = self._seen
        if seen is None:
            # Nobody held it when the wait was seen: the next look (or the end of
            # the wait) says who took it, or let go, in between.
            if not self._gap:
                self._gap_since = _wall() - seconds
            self._gap += seconds
            return
        self._add(seen, seconds)

    def _add(self, seen: Blocker, seconds: float) -> None:
        entry = self._split.get(seen.key)
        if entry is None:
            self._split[seen.key] = [seen, seconds]
        else:
            entry[1] += seconds
        if seen is _READERS:
            self._reader_wait += seconds

    def _settle_gap(self, now_seen: Blocker | None) -> None:
        """Charge time when nobody was seen holding: to whoever holds now, or let go since."""
        if not self._gap:
            return
        gap, self._gap = self._gap, 0.0
        self._add(now_seen or self._recent_writer(self._gap_since - 0.002) or _OUTSIDE, gap)

    def _look(self) -> Blocker | None:
        """The holder of this database's write lock now, from the table."""
        table = self.table
        if table is None:
            return None
        me = self.slot.index if self.slot is not None else None
        locks = self.locks
        os_pid = locks.holder_pid() if locks is not None else None
        h, index = table.holder(self.key, me, os_pid)
        if h is None and os_pid and locks is not None:
            # The table and the lock are read one after the other: that process
            # may have let go in between (and someone else taken it). Read again.
            again = locks.holder_pid()
            if again != os_pid:
                os_pid = again
                h, index = table.holder(self.key, me, os_pid)
        if h is None or index is None:
            if not os_pid:
                return None
            # Another process holds it, with no slot saying so: if it is an
            # instrumented process that just let go, it is the last writer.
            found = table.last_writer(self.key)
            if found is not None and found[0].pid == os_pid:
                return _blocker(found[0], False)
            if table.uses(os_pid, self.key):
                # An instrumented process with no write under way: in WAL mode a
                # reader takes the write lock for an instant to read an index a
                # writer is changing (or to rebuild it).
                return _BRIEF._replace(pid=os_pid)
            return self._outside_pid(os_pid)
        table.waited_on(index)  # it keeps that write as an event
        same = h.pid == self.origin.pid and h.thread_ident == (_current_thread().ident or 0)
        return _blocker(h, same)

    @staticmethod
    def _outside_pid(pid: int) -> Blocker:
        return _OUTSIDE._replace(pid=pid)

    def _recent_writer(self, since: float) -> Blocker | None:
        """The database's last writer, if it let go of the lock after ``since``."""
        table = self.table
        found = table.last_writer(self.key) if table is not None else None
        if found is None or found[1] < since:
            return None
        h = found[0]
        if h.pid == self.origin.pid and h.conn_id == self.origin.conn_id:
            return None
        same = h.pid == self.origin.pid and h.thread_ident == (_current_thread().ident or 0)
        return _blocker(h, same)

    def _blame(self, now: float | None) -> tuple[Blocker | None, tuple[tuple[Blocker, float], ...]]:
        """The blocker (the largest share of the wait) and the whole split.

        With no wait to split (SQLite skipped the busy handler), ``now`` asks the
        table: the holder now, or one that let go in the instant since.
        """
        if self._gap:
            self._settle_gap(None)
        split = tuple((b, s) for b, s in self._split.values())
        if split:
            return max(split, key=lambda e: e[1])[0], split
        if self._seen is not None:
            return self._seen, ()
        if now is not None:
            return self._look() or self._recent_writer(now - 0.05) or _OUTSIDE, ()
        return None, ()

    def _last_writer(self, txn: Any) -> Blocker:
        """A stale WAL snapshot: whoever committed after this transaction read."""
        since = txn.wall if txn is not None else _wall() - 1.0
        return self._recent_writer(since) or self._look() or _OUTSIDE
