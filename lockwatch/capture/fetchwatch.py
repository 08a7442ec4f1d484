"""The cursor side of capture: fetches that let go of the write lock.

INSERT ... RETURNING keeps the write lock after execute(): SQLite resets the
statement, and an autocommit write commits, inside the fetch of its last row.
``FetchWatch`` is mixed into every instrumented cursor class (Django's and the raw
sqlite3 layer's) so that the probe hears of it then.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from lockwatch.capture.probe import Probe

T = TypeVar("T")


class FetchWatch:
    """Cursor methods that tell the probe when a statement holding the lock is reset."""

    _lockwatch: Probe | None = None

    @staticmethod
    def _fetching(probe: Probe, fetch: Callable[..., T], *args: Any) -> T:
        __tracebackhide__ = True  # pytest shows the app's line, not this one
        try:
            out = fetch(*args)
        except BaseException as exc:
            probe.fetched(exc)
            raise
        probe.fetched()
        return out

    def fetchone(self) -> Any:
        probe = self._lockwatch
        if probe is None or probe._returning is None:  # a read's fetch: nothing to settle
            return super().fetchone()  # type: ignore[misc]
        return self._fetching(probe, super().fetchone)  # type: ignore[misc]

    def fetchmany(self, *args: Any, **kwargs: Any) -> Any:
        probe = self._lockwatch
        if probe is None or probe._returning is None:  # a read's fetch: nothing to settle
            return super().fetchmany(*args, **kwargs)  # type: ignore[misc]
        return self._fetching(probe, functools.partial(super().fetchmany, *args, **kwargs))  # type: ignore[misc]

    def fetchall(self) -> Any:
        probe = self._lockwatch
        if probe is None or probe._returning is None:  # a read's fetch: nothing to settle
            return super().fetchall()  # type: ignore[misc]
        return self._fetching(probe, super().fetchall)  # type: ignore[misc]

    def close(self) -> None:
        super().close()  # type: ignore[misc]
        probe = self._lockwatch
        if probe is not None and probe._returning is not None:
            probe.fetched()
