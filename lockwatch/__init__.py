"""lockwatch: who waited, for how long, and who held the SQLite lock."""

from __future__ import annotations

__version__ = "0.1.0"

from lockwatch.capture.context import tag  # noqa: E402


# Capture is imported on first use: `import lockwatch.store` (the dashboard, the export,
# the doctor) must not load the capture layer and Django's request handler with it.
def instrument_sqlite3() -> None:
    """Instrument every later ``sqlite3.connect`` in this process. Idempotent."""
    from lockwatch.capture.rawsqlite import instrument_sqlite3 as install

    install()


def uninstrument_sqlite3() -> None:
    from lockwatch.capture.rawsqlite import uninstrument_sqlite3 as remove

    remove()


def flush(timeout: float = 10.0) -> None:
    """Write every event captured so far to the store."""
    from lockwatch import pipeline

    pipeline.flush(timeout)


__all__ = ["__version__", "flush", "instrument_sqlite3", "tag", "uninstrument_sqlite3"]
