"""The database wrapper mixin: Django's seams, handed to capture.

Django's statements go through its cursor class; savepoints and ``BEGIN``
(``_start_transaction_under_autocommit``) too. The raw ``sqlite3`` connection
(``connection.connection``) is made of rawsqlite's instrumented class, so what
others run on it directly (``df.to_sql(con=connection.connection)``, its own
``cursor()``, ``execute()``, ``commit()``) is captured by the same probe, and
Django's commits, rollbacks and close are seen there. Django's cursor class
captures itself, so no statement is recorded twice.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Mapping
from typing import Any

from django.db.backends.sqlite3.base import SQLiteCursorWrapper

from lockwatch import paths
from lockwatch.capture.fetchwatch import FetchWatch
from lockwatch.capture.probe import Probe, attach
from lockwatch.capture.rawsqlite import (
    connection_class,
    give_probe,
    self_capturing_cursor,
    suppressed,
)


class LockwatchCursor(FetchWatch, SQLiteCursorWrapper):
    """Django's cursor, with its connection's probe set on each instance.

    (A subclass per connection would save that one attribute per cursor, but
    costs more than it saves: Django opens a connection per request by default.)
    """

    _lockwatch: Probe | None = None
    _lockwatch_captures = True  # the raw connection does not wrap it again

    def execute(self, query: str, params: Any = None) -> Any:
        __tracebackhide__ = True  # pytest shows the app's line, not this one
        probe = self._lockwatch
        if probe is None:
            return super().execute(query, params)
        return probe.run(super().execute, query, params)

    def executemany(self, query: str, param_list: Any) -> Any:
        __tracebackhide__ = True  # pytest shows the app's line, not this one
        probe = self._lockwatch
        if probe is None:
            return super().executemany(query, param_list)
        return probe.run(super().executemany, query, param_list, many=True)


@functools.lru_cache(maxsize=64)
def _db_path(name: Any, uri: bool) -> str:
    return paths.database(name, uri=uri)


class LockwatchWrapperMixin:
    """Placed over Django's sqlite3 DatabaseWrapper."""

    alias: str
    connection: Any
    settings_dict: Mapping[str, Any]

    _lockwatch: Probe | None = None

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        params = dict(conn_params)
        cls = connection_class(params.get("factory", sqlite3.Connection))
        if cls is not None:
            params["factory"] = cls
        with suppressed():  # this backend instruments it; instrument_sqlite3 must not
            conn = super().get_new_connection(params)  # type: ignore[misc]
        # What was opened: Django's params (the test database's name under tests).
        name = conn_params.get("database", self.settings_dict["NAME"])
        db = _db_path(name, bool(conn_params.get("uri", True)))
        probe = self._lockwatch = attach(conn, self.alias, db)
        give_probe(conn, probe)
        return conn

    def create_cursor(self, name: str | None = None) -> Any:
        cursor = self_capturing_cursor(self.connection, LockwatchCursor)
        cursor._lockwatch = self._lockwatch
        return cursor

    def _commit(self) -> None:
        __tracebackhide__ = True  # pytest shows the app's line, not this one
        probe = self._lockwatch
        if probe is None or self.connection is None or _raw(self.connection):
            super()._commit()  # type: ignore[misc]
            return
        probe.commit(super()._commit)  # type: ignore[misc]

    def _rollback(self) -> None:
        __tracebackhide__ = True  # pytest shows the app's line, not this one
        probe = self._lockwatch
        if probe is None or self.connection is None or _raw(self.connection):
            super()._rollback()  # type: ignore[misc]
            return
        probe.rollback(super()._rollback)  # type: ignore[misc]

    def _close(self) -> None:
        probe = self._lockwatch
        self._lockwatch = None
        if probe is None or self.connection is None or _raw(self.connection):
            super()._close()  # type: ignore[misc]
            return
        probe.closing()
        try:
            super()._close()  # type: ignore[misc]
        finally:
            probe.closed()


def _raw(conn: Any) -> bool:
    """The raw connection reports its commits, rollbacks and close itself."""
    return getattr(conn, "_lockwatch", None) is not None
