"""The live holder table: who holds each watched database's write lock, right now.

A small memory-mapped file beside the store, shared by every process on the
machine that writes to that store. Each instrumented connection owns one slot
and is its only writer; it says there what it is doing to which database
(running a statement that may take the write lock, holding it, waiting for it,
or holding it while its COMMIT waits for readers). A waiter reads the slots of
its database from its busy handler, so a wait and a busy error name their
blocker at the moment they happen, with nothing to look up later in the store.

A slot is written under a sequence number (odd while a write is under way), so
a reader in another process never takes a half-written slot. Slots of a process
that died are taken back by the next process that needs one.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import NamedTuple

from lockwatch import events

MAGIC = b"LWHOLD02"  # 02: room for a long call site
SLOTS = 512
SLOT_SIZE = 512
_HEADER = 64
# The last writer of each database (for a stale WAL snapshot), by its key's hash.
WRITERS = 64

# Slot states. A connection that is not touching the lock is IDLE.
FREE, IDLE, RUNNING, HOLDING, WAITING, COMMITTING = 0, 1, 2, 3, 4, 5
STATE_NAMES = {
    IDLE: "idle", RUNNING: "running", HOLDING: "holding", WAITING: "waiting",
    COMMITTING: "waiting for readers",
}  # fmt: skip

# seq, state, flag, db key, owner pid, conn id, thread ident, txn, since, poll_until
_SEQ = struct.Struct("<I")
_SEQ_MASK = 0xFFFFFFFF  # it wraps; 2**32 is even, so odd still means "being written"
_HEAD = struct.Struct("<IBBxxQIIQQdd")
_TEXT = struct.Struct("<96s200s40s104s")  # context, call site, thread name, sql
_BODY = struct.Struct("<BBxxQIIQQdd96s200s40s104s")  # everything after seq
_OFF_STATE = 4
# A pad byte of the head, outside the sequence lock: a waiter sets it on the slot it
# finds in its way, and the next statement's fill clears it. Its owner then knows
# its write made someone wait, and keeps it as an event (lockwatch.pipeline.quiet).
_OFF_WAITED = 6
_OFF_POLL = 4 + _HEAD.size - 4 - 8  # poll_until: the last field of the head
_POLL = struct.Struct("<d")
_SINCE = struct.Struct("<d")
_OFF_SINCE = 4 + 4 + 8 + 4 + 4 + 8 + 8  # since: after seq, state..txn
_META = struct.Struct("<BBxxQIIQQdd")  # a slot's numbers, after its seq
_USED = struct.Struct("<I")  # in the header: how many slots were ever claimed
_OFF_USED = len(MAGIC)
_BODY_POLL = _OFF_POLL - 4  # the same field, within a body copied without its seq
assert _SEQ.size + _BODY.size <= SLOT_SIZE
assert _SEQ.size + _BODY.size == _HEAD.size + _TEXT.size

# A waiter that has not polled for this long past its planned retry is running again.
_POLL_SLACK = 0.005

# A slot's flag: not a statement's mark. The connection closes (the last one to
# close a WAL database checkpoints it holding an EXCLUSIVE lock), or it only says
# which database it uses.
BRIEF = 1

# What a wait can be behind besides a slot, as the store names it.
OUTSIDE, READERS, WAL_READ = events.OUTSIDE, events.READERS, events.WAL_READ


def db_key(db: str) -> int:
    """A database's key in the table: 8 bytes of its path's hash, never 0."""
    return int.from_bytes(hashlib.blake2b(db.encode(), digest_size=8).digest(), "little") or 1


class Holder(NamedTuple):
    """One connection as a waiter saw it in the table."""

    pid: int
    conn_id: int
    thread_ident: int
    txn: int
    state: int
    since: float  # wall time it started running the statement, or took the lock
    context: str
    call_site: str
    thread: str
    sql: str
    db: int = 0  # the database's key (db_key)

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.pid, self.conn_id, self.txn)


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", "replace")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


class Table:
    """One mapped holder file."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        size = _HEADER + (SLOTS + WRITERS) * SLOT_SIZE
        if readonly:  # a reader of an existing table (the dashboard): never creates it
            fd = os.open(path, os.O_RDONLY)
            try:
                if os.fstat(fd).st_size < size or os.pread(fd, len(MAGIC), 0) != MAGIC:
                    raise ValueError(f"{path} is not a lockwatch holder table")
                self.mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
            except BaseException:
                os.close(fd)
                raise
            self.fd = fd
            self._free: list[int] = []  # this process's claimed, unused slots
            self._lock = threading.Lock()
            self.pid = os.getpid()
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            st = os.fstat(fd)
            if st.st_uid == os.getuid() and st.st_mode & 0o077:
                os.fchmod(fd, 0o600)  # like the store: what the app runs is no one else's
            fcntl.lockf(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size < size:
                    os.ftruncate(fd, size)
                    os.pwrite(fd, MAGIC, 0)
                elif os.pread(fd, len(MAGIC), 0) != MAGIC:
                    raise ValueError(f"{path} is not a lockwatch holder table")
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN)
            self.mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        # A slot's sequence number is written with one 4-byte store. struct.pack_into
        # would zero the field first: a reader could then see the same (zero) number
        # before and after a half-written slot, and take it as whole.
        self._words = memoryview(self.mm).cast("I")
        self._view = memoryview(self.mm)
        self.fd = fd
        self._free = []
        self._lock = threading.Lock()
        self.pid = os.getpid()

    def _offset(self, index: int) -> int:
        return _HEADER + index * SLOT_SIZE

    def claim(self) -> Slot | None:
        """A slot for one connection of this process; None when the table is full."""
        with self._lock:
            if self.pid != os.getpid():  # forked: the parent's spare slots are not ours
                self._free.clear()
                self.pid = os.getpid()
            if not self._free:
                self._free = self._claim_many(2)
            if not self._free:
                return None
            return Slot(self, self._free.pop())

    def _claim_many(self, n: int) -> list[int]:
        mm, pid = self.mm, os.getpid()
        got: list[int] = []
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            for index in range(SLOTS):
                off = self._offset(index)
                owner = struct.unpack_from("<I", mm, off + 16)[0]
                if owner and (owner == pid or alive(owner)):
                    continue
                seq = ((_SEQ.unpack_from(mm, off)[0] | 1) + 1) & _SEQ_MASK  # even: no write
                self._words[off // 4] = (seq - 1) & _SEQ_MASK
                _BODY.pack_into(mm, off + 4, IDLE, 0, 0, pid, 0, 0, 0, 0.0, 0.0, b"", b"", b"", b"")
                self._words[off // 4] = seq
                got.append(index)
                if len(got) == n:
                    break
            if got and max(got) >= self._used():
                # Readers scan only the slots below this mark.
                _USED.pack_into(mm, _OFF_USED, max(got) + 1)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
        return got

    def _used(self) -> int:
        used: int = _USED.unpack_from(self.mm, _OFF_USED)[0]
        return min(used, SLOTS)

    def release(self, slot: Slot) -> None:
        slot.set_state(IDLE)
        with self._lock:
            if self.pid == os.getpid():
                self._free.append(slot.index)

    def read(self, index: int) -> Holder | None:
        """A consistent copy of one slot, or None if it is free (or kept changing)."""
        mm, off = self.mm, self._offset(index)
        for _ in range(8):
            seq = _SEQ.unpack_from(mm, off)[0]
            if seq & 1:
                continue
            raw = mm[off : off + _SEQ.size + _BODY.size]
            if _SEQ.unpack_from(mm, off)[0] != seq:
                continue
            f = _BODY.unpack_from(raw, 4)
            state, _flag, key, pid, conn_id, ident, txn, since, _poll = f[:9]
            if state == FREE or not pid:
                return None
            return Holder(
                pid, conn_id, ident, txn, state, since,
                _text(f[9]), _text(f[10]), _text(f[11]), _text(f[12]), key,
            )  # fmt: skip
        return None

    def waited_on(self, index: int) -> None:
        """A waiter found slot ``index`` in its way."""
        self.mm[self._offset(index) + _OFF_WAITED] = 1

    def wrote(self, slot: Slot) -> None:
        """``slot`` just let go of the write lock: it is its database's last writer.

        Written after the release, so two writers letting go at once can race;
        a checksum makes a reader skip a torn copy rather than trust it.
        """
        copy = slot.copy
        if copy is None:
            copy = slot.copy = memoryview(bytearray(4 + _BODY.size))
        off = slot.off
        copy[4:] = self._view[off + 4 : off + 4 + _BODY.size]
        # Its poll field says when it let go.
        _POLL.pack_into(copy, 4 + _BODY_POLL, time.time())
        _SEQ.pack_into(copy, 0, zlib.crc32(copy[4:]))
        at = self._offset(SLOTS + slot.key % WRITERS)
        self.mm[at : at + 4 + _BODY.size] = copy  # one copy: a reader sees it whole or torn

    def last_writer(self, key: int) -> tuple[Holder, float] | None:
        """The last connection to let go of the lock on ``key``, and when it did."""
        mm, at = self.mm, self._offset(SLOTS + key % WRITERS)
        raw = mm[at : at + 4 + _BODY.size]
        if _SEQ.unpack_from(raw)[0] != zlib.crc32(raw[4:]):
            return None
        f = _BODY.unpack_from(raw, 4)
        if f[2] != key or not f[3]:
            return None
        holder = Holder(
            f[3], f[4], f[5], f[6], f[0], f[7], _text(f[9]), _text(f[10]), _text(f[11]),
            _text(f[12]), f[2],
        )  # fmt: skip
        return holder, f[8]

    def holder(
        self, key: int, me: int | None, os_pid: int | None = None
    ) -> tuple[Holder | None, int | None]:
        """Who holds the write lock on ``key`` now, as far as the table knows.

        ``os_pid`` is the process the operating system says holds the lock
        (``FileLocks``): 0 when no other process does, None when unknown. A
        connection that holds it (or whose COMMIT waits for readers while it
        holds it) is certain. Failing that, one running a statement that may
        take it (or back from its busy handler's sleep) is the likely holder,
        the earliest such one. None: no instrumented connection has it.
        """
        now = time.time()
        mine = os.getpid()
        used = self._used()
        # Decide on the numbers alone (one copy of the used slots, no text decoded),
        # then read the chosen slot consistently.
        view = self.mm[_HEADER : _HEADER + used * SLOT_SIZE]
        meta = _META.unpack_from
        best: tuple[float, int] | None = None
        running: tuple[float, int] | None = None
        brief: tuple[float, int] | None = None
        for index in range(used):
            state, flag, k, pid, _c, _t, _x, since, poll = meta(view, index * SLOT_SIZE + 4)
            if k != key or state <= IDLE or index == me:
                continue
            if os_pid is not None and pid != (os_pid or mine):
                continue  # the lock is that process's, not this one's
            if os_pid is None and not alive(pid):
                continue  # SQLite let go of a dead process's locks
            if flag == BRIEF:
                # Named only when the operating system says its process holds it.
                if os_pid and state == RUNNING and (brief is None or since < brief[0]):
                    brief = (since, index)
                continue
            if state in (HOLDING, COMMITTING):
                if best is None or since < best[0]:
                    best = (since, index)
            elif (
                state == RUNNING
                # Back from its sleep: it may have got the lock. Certain when the
                # operating system says its process holds it.
                or (state == WAITING and (os_pid or now > poll + _POLL_SLACK))
            ) and (running is None or since < running[0]):
                running = (since, index)
        found = best or running or brief
        if found is None:
            return None, None
        h = self.read(found[1])
        if h is None or h.state <= IDLE:
            return None, None  # it let go meanwhile
        return h, found[1]

    def uses(self, pid: int, key: int) -> bool:
        """Has a connection of process ``pid`` used database ``key``?"""
        view = self.mm[_HEADER : _HEADER + self._used() * SLOT_SIZE]
        for index in range(len(view) // SLOT_SIZE):
            state, _f, k, owner = _META.unpack_from(view, index * SLOT_SIZE + 4)[:4]
            if owner == pid and k == key and state != FREE:
                return True
        return False

    def snapshot(self) -> list[tuple[Holder, bool]]:
        """Every slot that holds or may hold a lock now: (holder, abandoned)."""
        out = []
        for index in range(self._used()):
            h = self.read(index)
            if h is not None and h.state in (HOLDING, COMMITTING, RUNNING):
                out.append((h, not alive(h.pid)))
        return out

    def waiting(self, slack: float) -> list[Holder]:
        """The connections waiting for a write lock now: each busy handler sets its next
        poll before it sleeps, so one more than ``slack`` seconds past its poll has
        stopped waiting (it got the lock, or its statement is over), and one whose
        process is gone waits for nothing."""
        now = time.time()
        view = self.mm[_HEADER : _HEADER + self._used() * SLOT_SIZE]
        out = []
        for index in range(len(view) // SLOT_SIZE):
            state, _f, _k, _p, _c, _t, _x, _s, poll = _META.unpack_from(view, index * SLOT_SIZE + 4)
            if state != WAITING or now > poll + slack:
                continue
            h = self.read(index)
            if h is not None and h.state == WAITING and alive(h.pid):
                out.append(h)
        return out

    def close(self) -> None:
        for name in ("_words", "_view"):
            view = getattr(self, name, None)
            if view is not None:
                view.release()
        try:
            self.mm.close()
        finally:
            os.close(self.fd)


class Slot:
    """One connection's slot; only its owner writes it."""

    __slots__ = ("table", "index", "off", "seq", "key", "since", "mm", "words", "pid", "copy")

    def __init__(self, table: Table, index: int) -> None:
        self.table = table
        self.index = index
        self.off = table._offset(index)
        # The table's, looked up once: a slot is filled before every write.
        self.mm, self.words, self.pid = table.mm, table._words, table.pid
        self.copy: memoryview | None = None  # wrote()'s scratch, per slot: one thread each
        self.seq = _SEQ.unpack_from(table.mm, self.off)[0] & ~1
        self.key = 0
        self.since = -1.0  # what the body's since field holds (only the owner writes it)

    def fill(
        self, state: int, key: int, conn_id: int, ident: int, txn: int, since: float,
        context: bytes, site: bytes, thread: bytes, sql: bytes, flag: int = 0,
    ) -> None:  # fmt: skip
        """Everything at once: a new statement that may take the lock."""
        mm, off, words = self.mm, self.off, self.words
        at = off >> 2
        self.key = key
        self.since = since
        seq = (self.seq + 1) & _SEQ_MASK
        words[at] = seq
        _BODY.pack_into(
            mm, off + 4, state, flag, key, self.pid, conn_id, ident, txn, since, 0.0,
            context, site, thread, sql,
        )  # fmt: skip
        self.seq = seq = (seq + 1) & _SEQ_MASK
        words[at] = seq

    def made_wait(self) -> bool:
        """Did a waiter find this slot in its way since its last fill?"""
        return self.mm[self.off + _OFF_WAITED] != 0

    def set_state(self, state: int) -> None:
        # One byte: a reader sees the old state or the new one, with the same fields.
        self.mm[self.off + _OFF_STATE] = state

    def set_since(self, state: int, since: float) -> None:
        if since == self.since:  # most often: the statement's start, filled before it
            self.mm[self.off + _OFF_STATE] = state
            return
        self.since = since
        mm, off, words = self.mm, self.off, self.words
        at = off >> 2
        seq = (self.seq + 1) & _SEQ_MASK
        words[at] = seq
        mm[off + _OFF_STATE] = state
        _SINCE.pack_into(mm, off + _OFF_SINCE, since)
        self.seq = seq = (seq + 1) & _SEQ_MASK
        words[at] = seq

    def waiting(self, state: int, poll_until: float) -> None:
        mm, off = self.mm, self.off
        _POLL.pack_into(mm, off + _OFF_POLL, poll_until)
        mm[off + _OFF_STATE] = state


_tables: dict[str, Table | None] = {}
_tables_lock = threading.Lock()


def places(store: Path) -> tuple[Path, Path]:
    """Where the table for ``store`` lives: beside it, else in the temp dir."""
    digest = hashlib.blake2b(str(store).encode(), digest_size=8).hexdigest()
    fallback = Path(tempfile.gettempdir()) / f"lockwatch-{os.getuid()}-{digest}-holders"
    return path_for(store), fallback


def path_for(store: Path) -> Path:
    return store.with_name(store.name + "-holders")


def table_for(store: Path) -> Table | None:
    """The holder table beside ``store``, or in the temp dir if that is not writable."""
    name = str(store)
    table = _tables.get(name, False)
    if table is not False:
        return table  # type: ignore[return-value]
    with _tables_lock:
        if name in _tables:
            return _tables[name]
        found: Table | None = None
        for candidate in places(store):
            try:
                candidate.parent.mkdir(parents=True, exist_ok=True)
                found = Table(candidate)
                break
            except (OSError, ValueError):
                continue  # the next place; the probe counts a table it could not open
        _tables[name] = found
        return found


def _after_fork() -> None:
    global _tables_lock
    _tables_lock = threading.Lock()
    for table in _tables.values():
        if table is not None:
            table._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def open_reader(store: Path) -> Table | None:
    """The holder table of ``store``, read-only, for a reader (never creates it)."""
    for candidate in places(store):
        try:
            return Table(candidate, readonly=True)
        except (OSError, ValueError):
            continue
    return None
