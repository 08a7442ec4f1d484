"""Opening the store to read it: the dashboard, ``lockwatch export`` and ``lockwatch doctor``.

A read-only connection cannot migrate, so a reader must look at the schema version
itself: a store written by a newer lockwatch may have other columns, and reading it
as this version's gave wrong CSV cells and 500s. A file that is not SQLite fails on
its first read, which happens here too, so every reader refuses both at once, in one
line, before any output.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping

from lockwatch import store
from lockwatch.store import schema
from lockwatch.store.filters import FilterError


class UnreadableStore(store.StoreError):
    """The file is there, but this lockwatch cannot read it as its store."""


def open_store(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection to the store at `path`, after checking its schema version.

    Raises ``store.StoreError`` when there is no store yet, and ``UnreadableStore``
    (a StoreError) when the file is not a store or is a newer lockwatch's.
    """
    conn = store.connect(path, readonly=True)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.OperationalError as exc:  # locked for long, or gone: try again later
        conn.close()
        raise UnreadableStore(f"the store cannot be read right now: {exc}") from None
    except sqlite3.DatabaseError as exc:  # "file is not a database"
        conn.close()
        raise UnreadableStore(
            f"the store cannot be read: {path} is not a lockwatch store ({exc})"
        ) from None
    if version > schema.SCHEMA_VERSION:
        conn.close()
        raise UnreadableStore(
            f"the store cannot be read: {path} has schema version {version}, newer than"
            f" this lockwatch reads ({schema.SCHEMA_VERSION}); upgrade lockwatch to read it"
        )
    return conn


def text_options(options: Mapping[str, str | None]) -> Mapping[str, str | None]:
    """`options` (command-line values) when each is text; else a FilterError naming it.

    Bytes that are not UTF-8 reach Python's argv as lone surrogates, which SQLite
    cannot be given (a UnicodeEncodeError and a traceback, mid-export).
    """
    for name, value in options.items():
        if value is None:
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            option = "--" + name.replace("_", "-")
            raise FilterError(f"{option}='{shown}' is not valid UTF-8 text") from None
    return options
