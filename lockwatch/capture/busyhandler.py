"""Exact lock waits: a busy handler installed on the sqlite3 connection with ctypes.

CPython's ``sqlite3`` does not expose ``sqlite3_busy_handler``. On CPython the
``sqlite3*`` sits right after the Connection object's header, and ``_sqlite3``
links ``libsqlite3`` dynamically, so the C API can be reached through ctypes.
The handle is verified before use; where it cannot be, capture falls back to
inferring waits from timings and says so on every event.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sqlite3
import sys
import threading
import time
from typing import Protocol

log = logging.getLogger("lockwatch")

SQLITE_TXN_NONE, SQLITE_TXN_READ, SQLITE_TXN_WRITE = 0, 1, 2

_BUSY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int)


class _Api:
    def __init__(self) -> None:
        import _sqlite3

        # dlsym on the extension module also searches the library it links.
        lib = ctypes.CDLL(_sqlite3.__file__)
        lib.sqlite3_libversion.restype = ctypes.c_char_p
        lib.sqlite3_libversion.argtypes = []
        version = lib.sqlite3_libversion().decode()
        if version != sqlite3.sqlite_version:
            raise RuntimeError(f"ctypes sees SQLite {version}, sqlite3 {sqlite3.sqlite_version}")
        lib.sqlite3_db_filename.restype = ctypes.c_char_p
        lib.sqlite3_db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.sqlite3_busy_handler.restype = ctypes.c_int
        lib.sqlite3_busy_handler.argtypes = [ctypes.c_void_p, _BUSY_CALLBACK, ctypes.c_void_p]
        lib.sqlite3_busy_timeout.restype = ctypes.c_int
        lib.sqlite3_busy_timeout.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.sqlite3_total_changes.restype = ctypes.c_int
        lib.sqlite3_total_changes.argtypes = [ctypes.c_void_p]
        lib.sqlite3_get_autocommit.restype = ctypes.c_int
        lib.sqlite3_get_autocommit.argtypes = [ctypes.c_void_p]
        self.txn_state = getattr(lib, "sqlite3_txn_state", None)
        if self.txn_state is not None:
            self.txn_state.restype = ctypes.c_int
            self.txn_state.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.lib = lib


_api: _Api | None = None
_api_error: str | None = None
_api_lock = threading.Lock()


def api() -> _Api | None:
    global _api, _api_error
    if _api is None and _api_error is None:
        with _api_lock:
            if _api is None and _api_error is None:
                try:
                    if sys.implementation.name != "cpython":
                        raise RuntimeError(f"{sys.implementation.name} is not CPython")
                    _api = _Api()
                except Exception as exc:
                    _api_error = f"{type(exc).__name__}: {exc}"
                    log.warning("lockwatch: exact waits unavailable (%s)", _api_error)
    return _api


def unavailable_reason() -> str | None:
    api()
    return _api_error


def raw_handle(conn: sqlite3.Connection) -> int | None:
    """The sqlite3* of a Connection, verified; None where it cannot be."""
    a = api()
    if a is None or type(conn).__basicsize__ < object.__basicsize__ + ctypes.sizeof(
        ctypes.c_void_p
    ):
        return None
    handle = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
    if not handle:
        return None
    # Python knows these too; a wrong pointer would not agree on both.
    if a.lib.sqlite3_total_changes(handle) != conn.total_changes:
        return None
    if bool(a.lib.sqlite3_get_autocommit(handle)) == conn.in_transaction:
        return None
    return handle


def db_filename(handle: int) -> str:
    a = api()
    assert a is not None
    name = a.lib.sqlite3_db_filename(handle, b"main")
    return os.fsdecode(name) if name else ""


def txn_state(handle: int) -> int:
    a = api()
    if a is None or a.txn_state is None:
        return -1
    state: int = a.txn_state(handle, None)
    return state


# SQLite's own busy-timeout schedule (sqliteDefaultBusyCallback), in seconds.
SQLITE_DELAYS = (0.001, 0.002, 0.005, 0.010, 0.015, 0.020, 0.025, 0.025, 0.025, 0.050, 0.050)
SQLITE_MAX_DELAY = 0.100
# How often a waiter looks at the holder table while it waits (seconds).
LOOK_EVERY = 0.2


class BusyHandler:
    """Counts SQLite's busy callbacks and times each wait exactly.

    SQLite calls the handler with the number of times it has been called for
    the same lock attempt. Sleeping happens in ``time.sleep``, which releases
    the GIL. By default it sleeps on SQLite's own schedule, so the app contends
    exactly as it would without lockwatch: polling faster lets writers slip in
    between another transaction's read and write, which changes the very error
    rate being diagnosed. ``fast=True`` (FAST_HANDOFF) polls every 0.25-2 ms
    instead, so a waiter takes the lock within about 2 ms of its release.
    """

    MAX_SLEEP = 0.002

    __slots__ = (
        "handle", "timeout", "fast", "calls", "_start", "_last", "_waited", "gave_up", "_cb",
        "watch", "interrupted", "_looked",
    )  # fmt: skip

    def __init__(self, handle: int, timeout: float, fast: bool = False) -> None:
        self.handle = handle
        self.timeout = timeout
        self.fast = fast
        self._cb = _BUSY_CALLBACK(self._on_busy)
        # Told what is in the way before each sleep, and how long it slept after.
        self.watch: Watch | None = None
        # A KeyboardInterrupt or SystemExit raised while it slept: the statement
        # is given up at once, and capture raises this instead of the busy error.
        self.interrupted: BaseException | None = None
        self.reset()

    def install(self) -> None:
        a = api()
        assert a is not None
        a.lib.sqlite3_busy_handler(self.handle, self._cb, None)

    def reset(self) -> None:
        self._looked = 0.0
        self.calls = 0
        self._start = 0.0
        self._last = 0.0
        self._waited = 0.0
        self.gave_up = False

    def _on_busy(self, _arg: int, count: int) -> int:
        try:
            now = time.perf_counter()
            if count == 0:
                if self._start:
                    self._waited += self._last - self._start
                self._start = self._last = now
            self.calls += 1
            remaining = self.timeout - (now - self._start)
            if self.fast:
                delay = min(self.MAX_SLEEP, 0.00025 * (1 << min(count, 3)))
            else:
                delay = SQLITE_DELAYS[count] if count < len(SQLITE_DELAYS) else SQLITE_MAX_DELAY
            delay = min(delay, max(remaining, 0.0))
            watch = self.watch
            # A look at the holder table costs tens of µs right after a sleep (cold
            # caches): look at the first call, then at most every LOOK_EVERY, and
            # when giving up; the time between goes to what was seen last.
            if watch is not None and (
                count == 0 or now - self._looked >= LOOK_EVERY or remaining <= 0
            ):
                self._looked = now
                try:
                    watch.poll(delay)
                except Exception:  # lockwatch's own failure must not change the wait
                    watch.failed()
            if remaining <= 0:
                if watch is not None:
                    watch.charge(now - self._last)
                self._last = now
                self.gave_up = True
                return 0
            time.sleep(delay)
            after = time.perf_counter()
            if watch is not None:
                watch.charge(after - self._last)
            self._last = after
            return 1
        except BaseException as exc:
            # Never let an exception escape into C. An interrupt gives up the wait
            # and is raised again by capture, once SQLite has returned.
            if not isinstance(exc, Exception):
                self.interrupted = exc
            self._last = time.perf_counter()
            return 0

    def waited(self) -> float:
        """Seconds waited since the last reset."""
        if self._start:
            return self._waited + (self._last - self._start)
        return self._waited


class Watch(Protocol):
    def poll(self, delay: float) -> None: ...
    def charge(self, seconds: float) -> None: ...
    def failed(self) -> None: ...
