"""The database wrapper mixin: Django's seams, handed to capture.

Statements go through the cursor class; commits, rollbacks and closes do not,
so ``_commit``, ``_rollback`` and ``close`` are hooked here too. Savepoints and
``BEGIN`` (``_start_transaction_under_autocommit``) run through the cursor.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from django.db.backends.sqlite3.base import SQLiteCursorWrapper

from .. import paths
from ..capture import FetchWatch, Probe, attach
from ..rawsqlite import suppressed


class LockwatchCursor(FetchWatch, SQLiteCursorWrapper):
    """Django's cursor, with its connection's probe set on each instance.

    (A subclass per connection would save that one attribute per cursor, but
    costs more than it saves: Django opens a connection per request by default.)
    """

    _lockwatch: Probe | None = None

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
        with suppressed():  # this backend instruments it; instrument_sqlite3 must not
            conn = super().get_new_connection(conn_params)  # type: ignore[misc]
        # What was opened: Django's params (the test database's name under tests).
        name = conn_params.get("database", self.settings_dict["NAME"])
        db = _db_path(name, bool(conn_params.get("uri", True)))
        self._lockwatch = attach(conn, self.alias, db)
        return conn

    def create_cursor(self, name: str | None = None) -> Any:
        cursor = self.connection.cursor(factory=LockwatchCursor)
        cursor._lockwatch = self._lockwatch
        return cursor

    def _commit(self) -> None:
        __tracebackhide__ = True  # pytest shows the app's line, not this one
        probe = self._lockwatch
        if probe is None or self.connection is None:
            return super()._commit()  # type: ignore[misc]
        probe.commit(super()._commit)  # type: ignore[misc]

    def _rollback(self) -> None:
        __tracebackhide__ = True  # pytest shows the app's line, not this one
        probe = self._lockwatch
        if probe is None or self.connection is None:
            return super()._rollback()  # type: ignore[misc]
        probe.rollback(super()._rollback)  # type: ignore[misc]

    def _close(self) -> None:
        probe = self._lockwatch
        if probe is not None:
            probe.closing()
            self._lockwatch = None
        try:
            super()._close()  # type: ignore[misc]
        finally:
            if probe is not None:
                probe.closed()
