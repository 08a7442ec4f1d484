"""Ground truth from the kernel, apart from lockwatch: which process holds a
lock on a database file that keeps writers (or, for EXCLUSIVE, everyone) out.

The bytes are SQLite's unix VFS ones (os_unix.c): RESERVED, the shared range
(write-locked only by an EXCLUSIVE holder) and the WAL write lock in -shm.
F_GETLK cannot see the calling process's own locks, so the holders watched
must be other processes.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
from pathlib import Path

_FLOCK = struct.Struct("@hhqqi4x")
_PENDING = 0x40000000
# (file suffix, first byte, length, test lock type)
_SPOTS = (("-shm", 120, 1, fcntl.F_WRLCK), ("", _PENDING + 1, 1, fcntl.F_WRLCK),
          ("", _PENDING + 2, 510, fcntl.F_RDLCK))  # fmt: skip


def owners_now(db: Path | str) -> set[int]:
    """The processes holding such a lock right now."""
    found = set()
    for suffix, start, size, kind in _SPOTS:
        try:
            fd = os.open(f"{db}{suffix}", os.O_RDONLY)
        except OSError:
            continue
        try:
            got = fcntl.fcntl(fd, fcntl.F_GETLK, _FLOCK.pack(kind, 0, start, size, 0))
        finally:
            # Closing drops this process's locks on the file: it must hold none.
            os.close(fd)
        l_type, _w, _s, _l, pid = _FLOCK.unpack(got)
        if l_type != fcntl.F_UNLCK:
            found.add(pid)
    return found


class LockOwners(threading.Thread):
    """Samples ``owners_now`` every half millisecond until ``done`` is set."""

    def __init__(self, db: Path | str) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.seen: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.0005):
            now = time.time()
            self.seen.extend((now, pid) for pid in owners_now(self.db))

    def held(self, pid: int, start: float, end: float) -> bool:
        return any(start <= t <= end and p == pid for t, p in self.seen)

    def __enter__(self) -> LockOwners:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join(5)
