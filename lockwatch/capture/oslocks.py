"""Which process holds a database's write lock, as the operating system says.

The holder table knows what instrumented connections say they do; the kernel
knows who holds SQLite's POSIX locks. ``FileLocks`` asks it (F_GETLK), so a
waiter can tell which process to look for, or name another program by pid.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time

# struct flock: l_type, l_whence, l_start, l_len, l_pid (padded as the C struct is).
_FLOCK = struct.Struct("@hhqqi4x")
# SQLite's unix VFS locks these bytes with POSIX advisory locks (os_unix.c).
_PENDING_BYTE = 0x40000000
_RESERVED_BYTE = _PENDING_BYTE + 1
_SHARED_FIRST = _PENDING_BYTE + 2
_SHARED_SIZE = 510
_WAL_WRITE_LOCK = 120  # in the -shm file: the first of the WAL lock bytes


class FileLocks:
    """Which process holds a database's write lock, from the operating system.

    F_GETLK names the process holding a POSIX lock that conflicts with a test
    lock: the RESERVED byte (rollback journal), the WAL write lock in -shm, or
    an EXCLUSIVE lock on the shared range.
    It cannot see this process's own locks, so 0 means "not another process".

    The descriptors stay open for the life of the process: closing any
    descriptor of a file drops every POSIX lock this process holds on it,
    SQLite's included.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fds: dict[str, tuple[int, int]] = {}  # path -> (fd, inode)
        self._checked: dict[str, float] = {}  # path -> when to stat it again
        self._lock = threading.Lock()

    def _fd(self, path: str) -> int | None:
        got = self._fds.get(path)
        now = time.monotonic()
        if got is not None and now < self._checked.get(path, 0.0):
            return got[0] if got[0] >= 0 else None
        # At most once a second: is the file there, and still the one we have open?
        self._checked[path] = now + 1.0
        try:
            ino = os.stat(path).st_ino
        except OSError:
            self._forget(path)
            self._fds[path] = (-1, 0)  # not there: looked at again in a second
            return None
        if got is not None and got[1] == ino:
            return got[0]
        self._forget(path)
        with self._lock:
            got = self._fds.get(path)
            if got is not None and got[1] == ino:
                return got[0]
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
            self._fds[path] = (fd, os.fstat(fd).st_ino)
            return fd

    def _forget(self, path: str) -> None:
        got = self._fds.pop(path, None)
        if got is not None and got[0] < 0:
            return
        # SQLite deletes a -shm file only once no connection has it open, so no lock of
        # this process can sit on the old one: its descriptor can be closed. A replaced
        # database file's is left open (see above); that is rare.
        if got is not None and path.endswith("-shm"):
            os.close(got[0])

    def _pid(self, path: str, start: int, size: int = 1, kind: int = fcntl.F_WRLCK) -> int | None:
        fd = self._fd(path)
        if fd is None:
            return None
        pid = self._test(fd, start, size, kind)
        if pid == 0 and self._checked.get(path, 0.0) - time.monotonic() < 0.999:
            # Nobody, on the file as it was up to a second ago: the last connection
            # may have deleted it since (WAL) and the next one made a new one.
            was = self._fds.get(path)
            self._checked[path] = 0.0
            again = self._fd(path)
            if again is not None and self._fds.get(path) != was:
                return self._test(again, start, size, kind)
        return pid

    @staticmethod
    def _test(fd: int, start: int, size: int, kind: int) -> int | None:
        query = _FLOCK.pack(kind, os.SEEK_SET, start, size, 0)
        try:
            l_type, _w, _s, _l, pid = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, query))
        except OSError:
            return None
        return 0 if l_type == fcntl.F_UNLCK else pid

    def holder_pid(self) -> int | None:
        """The other process holding the write lock, 0 if none does, None if unknown."""
        wal = self._pid(self.path + "-shm", _WAL_WRITE_LOCK)
        if wal:
            return wal
        reserved = self._pid(self.path, _RESERVED_BYTE)
        if reserved is None:
            return wal
        if reserved:
            return reserved
        # An EXCLUSIVE lock without RESERVED: the last connection to close a WAL
        # database checkpoints it, or a reader rolls back a hot journal. Only a
        # write lock on the shared range conflicts with this read-lock test.
        exclusive = self._pid(self.path, _SHARED_FIRST, _SHARED_SIZE, fcntl.F_RDLCK)
        return exclusive if exclusive is not None else reserved


_file_locks: dict[str, FileLocks] = {}


def file_locks(path: str) -> FileLocks | None:
    if not path or path == ":memory:" or not os.path.isabs(path):
        return None
    found = _file_locks.get(path)
    if found is None:
        found = _file_locks.setdefault(path, FileLocks(path))
    return found
