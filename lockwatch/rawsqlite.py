"""Capture connections that Django does not own: ``sqlite3.connect`` itself.

``instrument_sqlite3()`` makes every later ``sqlite3.connect`` in this process
return an instrumented Connection (SQLAlchemy's pysqlite dialect and
``pandas.to_sql`` both go through it). They get the same probe as Django's
connections: waits, busy classification, call sites and transactions.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from . import handle
from .capture import FetchWatch, Probe, attach

_ORIGINAL_CONNECT = sqlite3.connect
_suppressed: ContextVar[bool] = ContextVar("lockwatch_suppressed", default=False)
_lock = threading.Lock()
_installed = False


@contextlib.contextmanager
def suppressed() -> Iterator[None]:
    """Connections opened inside are not instrumented (lockwatch's own, Django's)."""
    token = _suppressed.set(True)
    try:
        yield
    finally:
        _suppressed.reset(token)


def original_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    return _ORIGINAL_CONNECT(*args, **kwargs)


class _CursorMixin(FetchWatch):
    _lockwatch: Probe | None = None

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        probe = self._lockwatch
        parent = super().execute  # type: ignore[misc]
        if probe is None:
            return parent(sql, parameters)
        return probe.run(parent, sql, parameters)

    def executemany(self, sql: str, seq: Any, /) -> Any:
        probe = self._lockwatch
        parent = super().executemany  # type: ignore[misc]
        if probe is None:
            return parent(sql, seq)
        return probe.run(parent, sql, seq, many=True)


@functools.cache
def _cursor_class(base: type) -> type:
    return type(f"Lockwatch{base.__name__}", (_CursorMixin, base), {})


class _ConnectionMixin:
    _lockwatch: Probe | None = None

    def cursor(self, factory: type = sqlite3.Cursor) -> Any:
        cur = super().cursor(_cursor_class(factory))  # type: ignore[misc]
        cur._lockwatch = self._lockwatch
        return cur

    # Connection.execute makes its own plain cursor in C, so route it here.
    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq: Any, /) -> Any:
        return self.cursor().executemany(sql, seq)

    def commit(self) -> None:
        probe = self._lockwatch
        parent = super().commit  # type: ignore[misc]
        if probe is None:
            return parent()
        probe.commit(parent)

    def rollback(self) -> None:
        probe = self._lockwatch
        parent = super().rollback  # type: ignore[misc]
        if probe is None:
            return parent()
        probe.rollback(parent)

    def close(self) -> None:
        probe = self._lockwatch
        if probe is not None:
            probe.closing()
            self._lockwatch = None
        super().close()  # type: ignore[misc]


@functools.cache
def _connection_class(base: type) -> type:
    return type(f"Lockwatch{base.__name__}", (_ConnectionMixin, base), {})


def _db_of(conn: sqlite3.Connection, database: Any) -> str:
    h = handle.raw_handle(conn)
    if h is not None:
        name = handle.db_filename(h)
        if name:
            return name
    text = os.fsdecode(database) if isinstance(database, str | bytes | os.PathLike) else ""
    if not text or text == ":memory:" or "mode=memory" in text:
        return ":memory:"
    return os.path.realpath(text.removeprefix("file:").split("?", 1)[0])


def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
    if _suppressed.get():
        return _ORIGINAL_CONNECT(database, *args, **kwargs)
    base = kwargs.pop("factory", sqlite3.Connection)
    conn = _ORIGINAL_CONNECT(database, *args, factory=_connection_class(base), **kwargs)
    conn._lockwatch = attach(conn, "sqlite3", _db_of(conn, database))
    return conn


def instrument_sqlite3() -> None:
    """Instrument every later ``sqlite3.connect`` in this process. Idempotent."""
    global _installed
    with _lock:
        if _installed:
            return
        sqlite3.connect = connect  # type: ignore[assignment]
        sqlite3.dbapi2.connect = connect  # type: ignore[attr-defined]
        _installed = True


def uninstrument_sqlite3() -> None:
    global _installed
    with _lock:
        sqlite3.connect = _ORIGINAL_CONNECT
        sqlite3.dbapi2.connect = _ORIGINAL_CONNECT  # type: ignore[attr-defined]
        _installed = False
