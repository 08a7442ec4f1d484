"""Capture connections that Django does not own: ``sqlite3.connect`` itself.

``instrument_sqlite3()`` makes every later ``sqlite3.connect`` in this process
return an instrumented connection (SQLAlchemy's pysqlite dialect and
``pandas.to_sql`` both go through it). They get the same probe as Django's
connections: waits, busy classification, call sites and transactions.

The ``sqlite3`` module has no hook that sees a statement's start, end and error
without taking one the user may set (``set_trace_callback``, progress handlers),
so statements are seen by subclassing: the connection's class (or the user's
``factory``) gets one layer placed directly above ``sqlite3.Connection``, and a
cursor's class likewise above ``sqlite3.Cursor``. Every override of the user's
classes runs first, as it would without lockwatch; only what reaches sqlite3's
own methods passes through capture. The one visible difference: ``type(conn)``
is that subclass (``isinstance(conn, sqlite3.Connection)`` and the user's class
still hold).
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from lockwatch import paths, plainsqlite
from lockwatch.capture.fetchwatch import FetchWatch
from lockwatch.capture.probe import Probe, attach

_ORIGINAL_CONNECT = plainsqlite.CONNECT
_suppressed: ContextVar[bool] = ContextVar("lockwatch_suppressed", default=False)
_lock = threading.Lock()
_installed = False
# sqlite3.connect's positional parameters after ``database``.
_FACTORY_AT, _URI_AT = 4, 6
_DEFAULT: Any = object()  # "not given": sqlite3's own default applies


@contextlib.contextmanager
def suppressed() -> Iterator[None]:
    """Connections opened inside are not instrumented (lockwatch's own, Django's)."""
    token = _suppressed.set(True)
    try:
        yield
    finally:
        _suppressed.reset(token)


def original_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    return plainsqlite.connect(*args, **kwargs)


class _Cursor(FetchWatch, sqlite3.Cursor):
    """The capture layer of a cursor, just above ``sqlite3.Cursor`` in its MRO."""

    _lockwatch: Probe | None = None

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        __tracebackhide__ = True  # pytest shows the app's line, not this one
        probe = self._lockwatch
        parent = super().execute
        if probe is None:
            return parent(sql, parameters)
        return probe.run(parent, sql, parameters)

    def executemany(self, sql: str, seq: Any, /) -> Any:
        __tracebackhide__ = True  # pytest shows the app's line, not this one
        probe = self._lockwatch
        parent = super().executemany
        if probe is None:
            return parent(sql, seq)
        return probe.run(parent, sql, seq, many=True)


def _layered(base: type, layer: type, root: type) -> type | None:
    """``base`` with ``layer`` just above ``root`` in its MRO; None if that cannot be made."""
    if base is root:
        return layer
    if not isinstance(base, type) or not issubclass(base, root):
        return None
    if issubclass(base, layer) or getattr(base, "_lockwatch_captures", False):
        return base  # already instrumented, or captures itself (Django's cursor)
    try:
        # (base, layer): base and everything between it and root come first, so every
        # override of the user's runs before capture, and capture before sqlite3.
        return type(base.__name__, (base, layer), {"__module__": base.__module__,
                                                   "__qualname__": base.__qualname__})  # fmt: skip
    except TypeError:  # a layout or metaclass that cannot take another base
        return None


@functools.lru_cache(maxsize=256)
def _cursor_class(base: type) -> type | None:
    return _layered(base, _Cursor, sqlite3.Cursor)


def _instrumented(obj: Any, classes: Callable[[type], type | None]) -> bool:
    """Put an object made by a factory function into its instrumented class, if it can go."""
    cls = classes(type(obj))
    if cls is None:
        return False
    if cls is not type(obj):
        try:
            obj.__class__ = cls  # a Python subclass: same layout, one more base
        except TypeError:  # sqlite3's own immutable classes
            return False
    return True


class _Connection(sqlite3.Connection):
    """The capture layer of a connection, just above ``sqlite3.Connection`` in its MRO."""

    _lockwatch: Probe | None = None

    def cursor(self, factory: Any = _DEFAULT) -> Any:
        parent = super().cursor
        if factory is _DEFAULT or factory is sqlite3.Cursor:
            cur = parent(_Cursor)
        else:
            cls = _cursor_class(factory) if isinstance(factory, type) else None
            if cls is not None:
                cur = parent(cls)
            else:
                # A factory function: sqlite3 calls it as it would; its cursor is
                # instrumented if its class can be.
                cur = parent(factory)
                if not _instrumented(cur, _cursor_class):
                    return cur
        cur._lockwatch = self._lockwatch
        return cur

    # Connection.execute makes its own plain cursor in C (never calling cursor()),
    # so it is routed through this layer's cursor, as sqlite3's would be.
    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        __tracebackhide__ = True  # pytest shows the app's line, not this one
        return _Connection.cursor(self).execute(sql, parameters)

    def executemany(self, sql: str, seq: Any, /) -> Any:
        __tracebackhide__ = True  # pytest shows the app's line, not this one
        return _Connection.cursor(self).executemany(sql, seq)

    def commit(self) -> None:
        __tracebackhide__ = True  # pytest shows the app's line, not this one
        probe = self._lockwatch
        parent = super().commit
        if probe is None:
            return parent()
        probe.commit(parent)

    def rollback(self) -> None:
        __tracebackhide__ = True  # pytest shows the app's line, not this one
        probe = self._lockwatch
        parent = super().rollback
        if probe is None:
            return parent()
        probe.rollback(parent)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        # ``with conn:`` commits or rolls back in C, without calling commit().
        probe = self._lockwatch
        parent = super().__exit__
        if probe is None:
            return parent(exc_type, exc, tb)
        out: list[Any] = []

        def end() -> None:
            out.append(parent(exc_type, exc, tb))

        if exc_type is None and exc is None and tb is None:
            probe.commit(end)
        else:
            probe.rollback(end)
        return out[0]

    def close(self) -> None:
        probe = self._lockwatch
        if probe is not None:
            probe.closing()
            self._lockwatch = None
        try:
            super().close()
        finally:
            if probe is not None:
                probe.closed()


def self_capturing_cursor(conn: sqlite3.Connection, cls: type) -> Any:
    """``conn.cursor(factory=cls)`` for a cursor class that captures itself (Django's):
    straight to sqlite3 unless a class of the user's overrides ``cursor()``."""
    if type(conn).cursor is _LAYER_CURSOR:
        return _SQLITE_CURSOR(conn, cls)
    return conn.cursor(factory=cls)


_LAYER_CURSOR = _Connection.cursor
_SQLITE_CURSOR = sqlite3.Connection.cursor


@functools.lru_cache(maxsize=256)
def _connection_class(base: type) -> type | None:
    return _layered(base, _Connection, sqlite3.Connection)


def connection_class(factory: Any) -> type | None:
    """The instrumented class for a connection ``factory`` (a class), or None."""
    return _connection_class(factory) if isinstance(factory, type) else None


def give_probe(conn: sqlite3.Connection, probe: Probe | None) -> None:
    """Let ``conn``'s own methods (its cursors, execute, commit) report to ``probe``."""
    if isinstance(conn, _Connection):
        conn._lockwatch = probe


def _db_of(database: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    uri = kwargs.get("uri", args[_URI_AT] if len(args) > _URI_AT else False)
    return paths.database(database, uri=bool(uri))


def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
    if _suppressed.get():
        return plainsqlite.connect(database, *args, **kwargs)
    # The factory stays where the caller put it (by name or position), so sqlite3
    # sees the same call, warnings included.
    positional = len(args) > _FACTORY_AT
    given = args[_FACTORY_AT] if positional else kwargs.get("factory", sqlite3.Connection)
    cls = _connection_class(given) if isinstance(given, type) else None
    factory = cls if cls is not None else given
    if positional:
        args = (*args[:_FACTORY_AT], factory, *args[_FACTORY_AT + 1 :])
    else:
        kwargs["factory"] = factory
    conn = plainsqlite.connect(database, *args, **kwargs)
    if cls is None and not _instrumented(conn, _connection_class):
        return conn  # a factory function's plain sqlite3.Connection: left as it is
    give_probe(conn, attach(conn, "sqlite3", _db_of(database, args, kwargs)))
    return conn


def instrument_sqlite3() -> None:
    """Instrument every later ``sqlite3.connect`` in this process. Idempotent."""
    global _installed
    with _lock:
        if _installed:
            return
        sqlite3.connect = connect  # type: ignore[assignment]
        sqlite3.dbapi2.connect = connect  # type: ignore[assignment]
        _installed = True


def uninstrument_sqlite3() -> None:
    global _installed
    with _lock:
        sqlite3.connect = _ORIGINAL_CONNECT
        sqlite3.dbapi2.connect = _ORIGINAL_CONNECT
        _installed = False
