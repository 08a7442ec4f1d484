"""A busy error: which of SQLite's errors it is, and why it happened."""

from __future__ import annotations

import sqlite3

SQLITE_BUSY, SQLITE_LOCKED, SQLITE_BUSY_SNAPSHOT = 5, 6, 517


def classify(
    code: int | None, *, gave_up: bool, calls: int, read_txn: bool, dur: float, timeout: float,
    exact: bool,
) -> str:  # fmt: skip
    """timeout, upgrade, snapshot, locked or other, for one busy error."""
    if code == SQLITE_BUSY_SNAPSHOT:
        return "snapshot"
    primary = None if code is None else code & 0xFF
    if primary == SQLITE_LOCKED:
        return "locked"
    if primary != SQLITE_BUSY:
        return "other"
    if exact:
        if gave_up:
            return "timeout"
        if calls == 0 and read_txn:
            # SQLite skips the busy handler when waiting could deadlock.
            return "upgrade"
        return "other"
    if timeout and dur >= 0.95 * timeout:
        return "timeout"
    if read_txn and dur < min(0.05 * timeout, 0.05):
        return "upgrade"
    return "other"


def sqlite_error(exc: BaseException) -> BaseException:
    """The sqlite3 error itself; Django's wrapper keeps it as ``__cause__``."""
    if not hasattr(exc, "sqlite_errorcode") and isinstance(exc.__cause__, sqlite3.Error):
        return exc.__cause__
    return exc


def is_lock_error(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)
    msg = str(exc)
    return msg.startswith(("database is locked", "database table is locked"))
