"""The bounded in-memory buffer between capture and the flusher.

``append`` never blocks, never does I/O and never raises: when the buffer is
full the record is dropped and counted. ``deque.append`` and ``popleft`` are
atomic under the GIL, so no lock is taken on the query path.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class Buffer:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[Any] = deque()
        self.dropped = 0
        self.accepted = 0

    def append(self, record: Any) -> None:
        items = self._items
        if len(items) >= self.capacity:
            self.dropped += 1
            return
        items.append(record)
        self.accepted += 1

    def drain(self, limit: int | None = None) -> list[Any]:
        items = self._items
        out: list[Any] = []
        pop = items.popleft
        n = len(items) if limit is None else min(limit, len(items))
        for _ in range(n):
            try:
                out.append(pop())
            except IndexError:
                break
        return out

    def __len__(self) -> int:
        return len(self._items)
