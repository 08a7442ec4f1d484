"""The background flusher: buffer → rows → store (and the live sinks).

It runs in a daemon thread, wakes every FLUSH_INTERVAL, and writes each batch
in one short transaction. Waits and busy errors arrive with their blockers
already named (capture reads the live holder table while it waits), so
nothing here waits for another process to flush.

Every record it takes from the buffer ends up counted once: stored (an event
row, or a hold row for a Lock), or lost. The process's row in the store is
written with each batch, so the store never says more was stored than it holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from lockwatch import holders, paths
from lockwatch.capture import callsite, context
from lockwatch.capture.records import Limits, Lock, Quiet, Transaction, context_label, to_row
from lockwatch.conf import get_config
from lockwatch.pipeline import publish
from lockwatch.pipeline.buffer import Buffer
from lockwatch.pipeline.quiet import Folder
from lockwatch.store import Hold, Process, StoreDamaged, Writer, damaged

Sink = Callable[[list[dict[str, Any]]], None]

log = logging.getLogger("lockwatch")


class StoreIsWatched(Exception):
    """Refused: lockwatch never writes into a database it watches."""


class StoreRefused(Exception):
    """Rows the store did not take (counted as lost, the rest of the batch stored)."""


_alive = holders.alive  # one answer to "is that process still there?"


class Flusher(threading.Thread):
    BATCH = 5000
    # A process dead this long past its last report, its records never all stored,
    # is taken to have died without flushing (a live one reports every second).
    STALE = 10.0
    # Retention: each prune may delete what this process wrote since its last one,
    # twice over, plus this much, so a backlog (a lowered limit) goes down too.
    PRUNE_SLACK = 2000

    def __init__(self, buffer: Buffer, counters: Any) -> None:
        super().__init__(name="lockwatch-flusher", daemon=True)
        cfg = get_config()
        self.cfg = cfg
        self.buffer = buffer
        self.counters = counters
        self.limits = Limits(cfg.sql_max_length, cfg.params_max_length)
        # Each batch is pruned right after it is written, so the store holds at most
        # one batch over RETENTION_MAX_ROWS: a small limit gets smaller batches.
        rows = cfg.retention_max_rows
        self.batch = self.BATCH if rows is None else min(self.BATCH, max(500, rows // 20))
        self.started_at = time.time()
        self.pid = os.getpid()
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._idle = threading.Condition()
        self._busy_flushing = False
        self._writer: Writer | None = None
        self._mode = "exact"
        self._last_report = 0.0
        self._last_prune = 0.0
        self._watched: set[str] = set()
        self._store_db = paths.database(cfg.store)
        # The store file (its inode) found damaged: nothing is written to it again.
        self._damaged: int | None = None
        # Sinks after the store (the live channel layer); each gets every stored batch.
        self.sinks: list[Sink] = publish.sinks(counters)

    # -- control --------------------------------------------------------------

    def run(self) -> None:
        while not self._halt.is_set():
            self._wake.wait(self.cfg.flush_interval)
            self._wake.clear()
            self._cycle()
        self._cycle()
        self._close()

    def stop(self, timeout: float = 10.0) -> None:
        self._halt.set()
        self._wake.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def flush_now(self, timeout: float = 10.0) -> None:
        """Block until everything buffered before the call is written."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._idle:
                if not len(self.buffer) and not self._busy_flushing:
                    return
            self._wake.set()
            time.sleep(0.005)

    # -- one cycle ------------------------------------------------------------

    def _cycle(self) -> None:
        with self._idle:
            self._busy_flushing = True
        try:
            while True:
                batch = self.buffer.drain(self.batch)
                if batch:
                    self._retain(self._write(batch))
                if len(batch) < self.batch:
                    break
            self._housekeeping()
        finally:
            with self._idle:
                self._busy_flushing = False

    def _store(self) -> Writer:
        if self._store_db in self._watched:
            raise StoreIsWatched(f"the store {self.cfg.store} is a watched database")
        w = self._writer
        if w is not None and w.moved():
            w.close()
            w = self._writer = None
        if w is None:
            if self._damaged is not None:
                try:
                    same = os.stat(self.cfg.store).st_ino == self._damaged
                except FileNotFoundError:
                    same = False
                if same:
                    raise StoreDamaged(f"the store {self.cfg.store} is damaged")
                self._damaged = None  # moved aside or deleted: a new store is made
            try:
                w = self._writer = Writer(self.cfg.store)
            except Exception as exc:
                if damaged(exc):  # damaged before we came: the same, from the start
                    with contextlib.suppress(OSError):
                        self._stop_writing(os.stat(self.cfg.store).st_ino, str(exc))
                raise
        return w

    def _write(self, batch: list[Any]) -> int:
        """Store one batch; the number of event rows stored."""
        rows: list[dict[str, Any]] = []
        opened: dict[str, Hold] = {}
        closed: list[tuple[str, float, str]] = []
        folder = Folder()
        folded = 0  # quiet records, and the Lock records folded with them
        for rec in batch:
            try:
                if type(rec) is Quiet:  # the most common record, by far: first
                    folder.add(rec)
                    folded += 1
                    if rec.key is not None and rec.hold is not None:
                        if opened.pop(rec.key, None) is not None:
                            folded += 1  # its hold, taken and let go in this batch
                        else:  # its hold row was stored with an earlier batch
                            closed.append(
                                (self._key(rec.key), rec.wall + (rec.dur or 0.0), "commit")
                            )
                    continue
                if isinstance(rec, Lock):
                    if rec.key in opened:  # one lock, one hold: a second is refused
                        self.counters.lost += 1
                    opened[rec.key] = self._hold(self._key(rec.key), rec)
                    continue
                row = to_row(rec, self.limits)
                if isinstance(rec, Transaction) and rec.lock_wall is not None:
                    end_ts = rec.wall + rec.dur
                    hold = opened.get(rec.key)
                    if hold is None:
                        closed.append((self._key(rec.key), end_ts, rec.end))
                    else:  # taken and let go within this batch: written once, already over
                        opened[rec.key] = hold._replace(end_ts=end_ts, end=rec.end)
                origin = getattr(rec, "origin", None)
                if origin is not None and origin.mode == "inferred":
                    self._mode = "inferred"
                rows.append(row)
            except Exception as exc:
                # Never stored: lost, and a capture error for its cause.
                self.counters.capture_errors += 1
                self.counters.lost += 1
                self.counters.log_once("event conversion", exc)
        quiet = folder.rows()
        self._watched.update(row["db"] for row in rows if row["db"])
        self._watched.update(q.db for q in quiet if q.db)
        stored = 0
        try:
            written = self._store().write(
                rows, list(opened.values()), closed, self._process(), quiet, folded
            )
        except Exception as exc:
            lost = len(rows) + len(opened) + folded
            self._failed(f"store write to {self.cfg.store}", exc, lost)
        else:
            c = self.counters
            c.stored += written.events + written.holds + written.quiet
            c.lost += written.refused + written.dropped
            if written.refused:
                c.log_once("hold write", StoreRefused("a hold with the same key is stored"))
            if written.dropped:
                c.log_once("row write", StoreRefused("a row could not be stored, even alone"))
            stored = written.events
        rows = [row for row in rows if row["id"] is not None]
        for sink in self.sinks:
            try:
                sink(rows)
            except Exception as exc:
                self.counters.live_errors += 1
                self.counters.live_missed += len(rows)
                self.counters.log_once("live publish", exc)
        return stored

    def _failed(self, what: str, exc: Exception, lost: int) -> None:
        c = self.counters
        c.store_errors += 1
        c.lost += lost
        if damaged(exc) and self._writer is not None:
            self._stop_writing(self._writer.inode, str(exc))
        elif not (damaged(exc) and self._damaged is not None):  # else said once already
            c.log_once(what, exc)
        self._drop_writer()

    def _stop_writing(self, inode: int, why: str) -> None:
        """The store file is damaged: never write to it again (it would only get worse)."""
        if self._damaged == inode:
            return
        self._damaged = inode
        log.error(
            "lockwatch: the store %s is damaged (%s): lockwatch has stopped writing to it, and"
            " counts the events it cannot store as lost. Move it aside or delete it: a new"
            " store is then made in its place.",
            self.cfg.store, why,
        )  # fmt: skip

    def _key(self, key: str) -> str:
        # Capture's key (pid:conn:txn) is unique within this process; pids are reused,
        # so this process's start makes it unique in the store.
        return f"{key}@{self.started_at:.6f}"

    @staticmethod
    def _hold(key: str, rec: Lock) -> Hold:
        return Hold(
            key=key,
            db=rec.origin.db,
            pid=rec.origin.pid,
            conn_id=rec.origin.conn_id,
            thread=rec.who.thread.name,
            context=context_label(rec.who.ctx),
            call_site=callsite.format(rec.site),
            sql=rec.sql[:1000],
            lock_ts=rec.wall,
        )

    def _process(self) -> Process:
        return Process(
            self.pid, self.started_at, context.default_label(), self._mode, self.figures()
        )

    def _retain(self, written: int) -> None:
        """Retention in step with what was written: each write is followed by a prune
        of as much (and more), in short transactions, so the limits hold under load."""
        cfg = self.cfg
        if cfg.retention_max_rows is None and cfg.retention_max_age is None:
            return
        now = time.monotonic()
        if not written and now - self._last_prune < 1.0:
            return
        if self._writer is None:
            return
        self._last_prune = now
        try:
            self._writer.prune(
                cfg.retention_max_age, cfg.retention_max_rows, 2 * written + self.PRUNE_SLACK
            )
        except Exception as exc:
            self._failed(f"store retention of {self.cfg.store}", exc, 0)

    def _housekeeping(self) -> None:
        now = time.time()
        try:
            w = self._writer
            if w is not None:
                why = w.damage()
                if why is not None:
                    raise StoreDamaged(why)
            if now - self._last_report >= 1.0 and (
                self._writer is not None or self.buffer.accepted
            ):
                self._last_report = now
                p = self._process()
                self._store().report(p.pid, p.started, p.program, p.mode, p.figures)
                self._store().reap_abandoned(_alive, now)
                for pid, program, n in self._store().reap_unflushed(
                    _alive, now, (self.pid, self.started_at), self.STALE
                ):
                    log.warning(
                        "lockwatch: process %s (%s) ended without its final flush (killed?):"
                        " at least %s of the records it captured were never stored, counted as"
                        " lost; what it captured after its last report is not known",
                        pid, program, n,
                    )  # fmt: skip
            self._retain(0)
        except Exception as exc:
            self._failed(f"store housekeeping of {self.cfg.store}", exc, 0)

    def figures(self) -> dict[str, int]:
        c = self.counters
        return {
            "accepted": self.buffer.accepted,
            "dropped": self.buffer.dropped,
            "capture_errors": c.capture_errors,
            "store_errors": c.store_errors,
            "lost": c.lost,
            "stored": c.stored,
            "live_errors": c.live_errors,
            "live_missed": c.live_missed,
        }

    def _drop_writer(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:
                pass
            self._writer = None

    def _close(self) -> None:
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                close()
        try:
            if self._writer is not None:
                p = self._process()
                self._writer.report(p.pid, p.started, p.program, p.mode, p.figures, ended=True)
        except Exception:
            pass
        self._drop_writer()
