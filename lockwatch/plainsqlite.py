"""``sqlite3.connect`` as the sqlite3 module has it, before ``instrument_sqlite3()``.

A leaf: the store, the checks and path resolution open their own connections
through it, so none of them imports capture (which would make the import graph
circular: capture → pipeline → flusher → store → capture).
"""

from __future__ import annotations

import sqlite3
from typing import Any

# Taken at import, before rawsqlite (which imports this) can replace sqlite3.connect.
CONNECT = sqlite3.connect


def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    """A plain, uninstrumented connection."""
    conn: sqlite3.Connection = CONNECT(*args, **kwargs)
    return conn
