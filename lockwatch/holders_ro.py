"""The live holder table, opened read-only: for readers that must not create it.

``holders.table_for`` creates the file when it is missing (every writing process
needs one). A reader such as ``lockwatch serve`` only looks: here the table is
mapped read-only, and only when a writing process has already made it, beside
the store or in the temp directory where ``table_for`` falls back.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import tempfile
import threading
from pathlib import Path

from . import holders

_SIZE = holders._HEADER + (holders.SLOTS + holders.WRITERS) * holders.SLOT_SIZE


def candidates(store: Path) -> list[Path]:
    """Where ``holders.table_for`` puts the table of ``store``, in its order."""
    digest = hashlib.blake2b(str(store).encode(), digest_size=8).hexdigest()
    fallback = Path(tempfile.gettempdir()) / f"lockwatch-{os.getuid()}-{digest}-holders"
    return [holders.path_for(store), fallback]


def open_table(store: Path) -> holders.Table | None:
    """The holder table of ``store`` mapped read-only, or None when none exists yet."""
    for path in candidates(store):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if os.fstat(fd).st_size < _SIZE or os.pread(fd, len(holders.MAGIC), 0) != (
                holders.MAGIC
            ):
                os.close(fd)
                continue  # being made, or not a holder table
            mm = mmap.mmap(fd, _SIZE, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            os.close(fd)
            continue
        # A Table whose mapping cannot be written: its readers (read, snapshot) work
        # as they do for a writer; anything that writes raises TypeError.
        table = holders.Table.__new__(holders.Table)
        table.path, table.mm, table.fd = path, mm, fd
        table._free, table._lock, table.pid = [], threading.Lock(), os.getpid()
        return table
    return None


def replaced(table: holders.Table) -> bool:
    """Whether ``table``'s file was deleted or replaced since it was opened."""
    try:
        return os.stat(table.path).st_ino != os.fstat(table.fd).st_ino
    except OSError:
        return True


def holders_by_key(table: holders.Table) -> list[tuple[int, holders.Holder, bool]]:
    """(database key, holder, abandoned) for each slot of ``snapshot()``, with its key.

    ``Holder`` does not carry its database; the key is read before and after the
    slot's consistent copy, and a slot that changed database meanwhile is skipped.
    """
    out = []
    mm = table.mm
    for index in range(table._used()):
        off = table._offset(index) + 4
        key = holders._PEEK.unpack_from(mm, off)[2]
        h = table.read(index)
        if h is None or h.state not in (holders.HOLDING, holders.COMMITTING, holders.RUNNING):
            continue
        if holders._PEEK.unpack_from(mm, off)[2] != key:
            continue
        out.append((key, h, not holders.alive(h.pid)))
    return out
