"""The background flusher: buffer → rows → store (and the live sinks).

It runs in a daemon thread, wakes every FLUSH_INTERVAL, and writes each batch
in one short transaction. Waits and busy errors arrive with their blockers
already named (capture reads the live holder table while it waits), so
nothing here waits for another process to flush.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from . import callsite, context, live
from .buffer import Buffer
from .conf import get_config
from .records import Limits, Lock, Transaction, _label, to_row
from .store import Hold, Writer

Sink = Callable[[list[dict[str, Any]]], None]


class StoreIsWatched(Exception):
    """Refused: lockwatch never writes into a database it watches."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Flusher(threading.Thread):
    BATCH = 5000

    def __init__(self, buffer: Buffer, counters: Any) -> None:
        super().__init__(name="lockwatch-flusher", daemon=True)
        cfg = get_config()
        self.cfg = cfg
        self.buffer = buffer
        self.counters = counters
        self.limits = Limits(cfg.sql_max_length, cfg.params_max_length)
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
        # Sinks after the store (the live channel layer); each gets every stored batch.
        self.sinks: list[Sink] = live.sinks(counters)

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
                batch = self.buffer.drain(self.BATCH)
                if batch:
                    self._write(batch)
                if len(batch) < self.BATCH:
                    break
            self._housekeeping()
        finally:
            with self._idle:
                self._busy_flushing = False

    def _store(self) -> Writer:
        if str(self.cfg.store) in self._watched:
            raise StoreIsWatched(f"the store {self.cfg.store} is a watched database")
        w = self._writer
        if w is not None and w.moved():
            w.close()
            w = self._writer = None
        if w is None:
            w = self._writer = Writer(self.cfg.store)
        return w

    def _write(self, batch: list[Any]) -> None:
        rows: list[dict[str, Any]] = []
        opened: dict[str, Hold] = {}
        closed: list[tuple[str, float, str]] = []
        for rec in batch:
            try:
                if isinstance(rec, Lock):
                    opened[rec.key] = self._hold(rec.key, rec, rec.wall, rec.sql, rec.site)
                    continue
                row = to_row(rec, self.limits)
                if isinstance(rec, Transaction) and rec.lock_wall is not None:
                    end_ts = rec.wall + rec.dur
                    hold = opened.get(rec.key)
                    if hold is None:
                        closed.append((rec.key, end_ts, rec.end))
                    else:  # taken and let go within this batch: written once, already over
                        opened[rec.key] = hold._replace(end_ts=end_ts, end=rec.end)
                origin = getattr(rec, "origin", None)
                if origin is not None and origin.mode == "inferred":
                    self._mode = "inferred"
                rows.append(row)
            except Exception as exc:
                self.counters.capture_errors += 1
                self.counters.log_once("event conversion", exc)
        self._watched.update(row["db"] for row in rows if row["db"])
        try:
            self._store().write(rows, list(opened.values()), closed)
        except Exception as exc:
            self.counters.store_errors += 1
            self.counters.lost += len(rows)
            self.counters.log_once(f"store write to {self.cfg.store}", exc)
            self._drop_writer()
        stored = [row for row in rows if row["id"] is not None]
        for sink in self.sinks:
            try:
                sink(stored)
            except Exception as exc:
                self.counters.live_errors += 1
                self.counters.live_missed += len(stored)
                self.counters.log_once("live publish", exc)

    @staticmethod
    def _hold(key: str, rec: Any, start: float, sql: str, site: Any) -> Hold:
        return Hold(
            key=key,
            db=rec.origin.db,
            pid=rec.origin.pid,
            conn_id=rec.origin.conn_id,
            thread=rec.who.thread.name,
            context=_label(rec.who.ctx),
            call_site=callsite.format(site),
            sql=sql[:1000],
            lock_ts=start,
        )

    def _housekeeping(self) -> None:
        now = time.time()
        try:
            if now - self._last_report >= 1.0 and (
                self._writer is not None or self.buffer.accepted
            ):
                self._last_report = now
                self._store().report(
                    self.pid, self.started_at, context.default_label(), self._mode, self.figures()
                )
                self._store().reap_abandoned(_alive, now)
            if now - self._last_prune >= 30.0:
                self._last_prune = now
                self._store().prune(self.cfg.retention_max_age, self.cfg.retention_max_rows)
        except Exception as exc:
            self.counters.store_errors += 1
            self.counters.log_once(f"store housekeeping of {self.cfg.store}", exc)
            self._drop_writer()

    def figures(self) -> dict[str, int]:
        c = self.counters
        return {
            "accepted": self.buffer.accepted,
            "dropped": self.buffer.dropped,
            "capture_errors": c.capture_errors,
            "store_errors": c.store_errors,
            "lost": c.lost,
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
                self._writer.report(
                    self.pid, self.started_at, context.default_label(), self._mode, self.figures()
                )
        except Exception:
            pass
        self._drop_writer()
