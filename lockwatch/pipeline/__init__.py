"""The process-wide pipeline: capture → buffer → flusher → sinks.

``emit`` is the only thing capture calls. It appends to the bounded buffer and,
the first time, starts the flusher thread. After a fork the child starts fresh.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Any

from lockwatch.pipeline.buffer import Buffer
from lockwatch.pipeline.flusher import Flusher

log = logging.getLogger("lockwatch")


class Counters:
    """lockwatch's own failures, counted and shown, never raised into the app."""

    def __init__(self) -> None:
        self.capture_errors = 0
        self.store_errors = 0
        self.live_errors = 0
        self.lost = 0  # records that could not be stored (events and holds)
        self.stored = 0  # records stored: event rows, and hold rows for Lock records
        self.live_missed = 0  # events that missed the live path
        self._logged: set[str] = set()

    def log_once(self, what: str, exc: BaseException) -> None:
        key = f"{what}:{type(exc).__name__}"
        if key not in self._logged:
            self._logged.add(key)
            # str(), not repr(): an OSError's str names its file, its repr does not.
            log.warning(
                "lockwatch: %s failed: %s: %s (logged once; counted from now on)",
                what, type(exc).__name__, exc,
            )  # fmt: skip


_lock = threading.Lock()
_buffer: Buffer | None = None
_flusher: Flusher | None = None
counters = Counters()


def current_buffer() -> Buffer:
    global _buffer
    if _buffer is None:
        with _lock:
            if _buffer is None:
                from lockwatch.conf import get_config

                _buffer = Buffer(get_config().buffer_size)
    return _buffer


def emit(record: Any) -> None:
    buf = _buffer if _buffer is not None else current_buffer()
    buf.append(record)
    if _flusher is None:
        _start()


def _start() -> None:
    global _flusher
    with _lock:
        if _flusher is not None:
            return
        _flusher = Flusher(current_buffer(), counters)
        _flusher.start()


def current_flusher() -> Flusher | None:
    return _flusher


def flush(timeout: float = 10.0) -> None:
    """Write everything captured so far; used by tests and at exit."""
    f = _flusher
    if f is not None:
        f.flush_now(timeout)


def capture_failed(exc: BaseException) -> None:
    counters.capture_errors += 1
    counters.log_once("capture", exc)


def shutdown() -> None:
    global _flusher
    f = _flusher
    if f is not None:
        f.stop()
        _flusher = None


def reset() -> None:
    """Drop the buffer and flusher (after fork, or for tests)."""
    global _buffer, _flusher, counters
    _buffer = None
    _flusher = None
    counters = Counters()


def _after_fork() -> None:
    # The parent's flusher thread does not exist here, and the parent will
    # flush what was buffered before the fork.
    global _lock
    _lock = threading.Lock()
    reset()


os.register_at_fork(after_in_child=_after_fork)
# Flush at exit while threads can still start: Python 3.12+ refuses new threads
# once atexit runs, and the live publisher may need one (a DNS lookup for Redis).
try:
    threading._register_atexit(shutdown)  # type: ignore[attr-defined]
except (AttributeError, RuntimeError):
    atexit.register(shutdown)
