"""The database wrapper mixin: Django's seams, handed to capture.

Statements go through the cursor class; commits, rollbacks and closes do not,
so ``_commit``, ``_rollback`` and ``close`` are hooked here too. Savepoints and
``BEGIN`` (``_start_transaction_under_autocommit``) run through the cursor.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from django.db.backends.sqlite3.base import SQLiteCursorWrapper

from ..capture import Probe, attach
from ..rawsqlite import suppressed


class LockwatchCursor(SQLiteCursorWrapper):
    """Each connection gets a subclass with its probe as a class attribute, so
    making a cursor (once per query in Django) costs nothing extra."""

    _lockwatch: Probe | None = None

    def execute(self, query: str, params: Any = None) -> Any:
        probe = self._lockwatch
        if probe is None:
            return super().execute(query, params)
        return probe.run(super().execute, query, params)

    def executemany(self, query: str, param_list: Any) -> Any:
        probe = self._lockwatch
        if probe is None:
            return super().executemany(query, param_list)
        return probe.run(super().executemany, query, param_list, many=True)


def _db_path(name: Any) -> str:
    text = os.fspath(name)
    if text.startswith("file:"):
        return text.split("?", 1)[0]
    if text == ":memory:" or not text:
        return ":memory:"
    return os.path.realpath(text)


class LockwatchWrapperMixin:
    """Placed over Django's sqlite3 DatabaseWrapper."""

    alias: str
    connection: Any
    settings_dict: Mapping[str, Any]

    _lockwatch: Probe | None = None
    _cursor_class: type = LockwatchCursor

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        with suppressed():  # this backend instruments it; instrument_sqlite3 must not
            conn = super().get_new_connection(conn_params)  # type: ignore[misc]
        probe = attach(conn, self.alias, _db_path(self.settings_dict["NAME"]))
        self._lockwatch = probe
        self._cursor_class = (
            LockwatchCursor
            if probe is None
            else type("LockwatchCursor", (LockwatchCursor,), {"_lockwatch": probe})
        )
        return conn

    def create_cursor(self, name: str | None = None) -> Any:
        return self.connection.cursor(factory=self._cursor_class)

    def _commit(self) -> None:
        probe = self._lockwatch
        if probe is None or self.connection is None:
            return super()._commit()  # type: ignore[misc]
        probe.commit(super()._commit)  # type: ignore[misc]

    def _rollback(self) -> None:
        probe = self._lockwatch
        if probe is None or self.connection is None:
            return super()._rollback()  # type: ignore[misc]
        probe.rollback(super()._rollback)  # type: ignore[misc]

    def _close(self) -> None:
        probe = self._lockwatch
        if probe is not None:
            probe.closing()
            self._lockwatch = None
        super()._close()  # type: ignore[misc]
