"""lockwatch: who waited, for how long, and who held the SQLite lock."""

from __future__ import annotations

__version__ = "0.1.0"

from .context import tag  # noqa: E402
from .rawsqlite import instrument_sqlite3, uninstrument_sqlite3  # noqa: E402


def flush(timeout: float = 10.0) -> None:
    """Write every event captured so far to the store."""
    from . import pipeline

    pipeline.flush(timeout)


__all__ = ["__version__", "flush", "instrument_sqlite3", "tag", "uninstrument_sqlite3"]
