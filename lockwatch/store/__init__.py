"""lockwatch's own event store: a separate SQLite file in WAL mode.

Several processes write to it at once (short IMMEDIATE transactions), and the
dashboard, export and doctor read it. It is opened with the plain ``sqlite3``
module, so its queries never pass through lockwatch's capture.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from lockwatch import events, holders
from lockwatch.plainsqlite import connect as original_connect
from lockwatch.store import retention, rollup
from lockwatch.store.schema import EVENT_COLUMNS, MIGRATIONS, SCHEMA_VERSION
from lockwatch.store.schema import immediate as _immediate

log = logging.getLogger("lockwatch")


def _insert(names: Sequence[str]) -> str:
    return "INSERT INTO events ({}) VALUES ({})".format(
        ", ".join(f'"{n}"' for n in names), ", ".join("?" for _ in names)
    )


_INSERT_EVENT = _insert([c.name for c in EVENT_COLUMNS])
# Per kind: the insert binds the id and only the columns that kind can fill.
_BY_KIND = {
    kind: (_insert(("id", *names)), operator.itemgetter("id", *names))
    for kind, names in events.KIND_COLUMNS.items()
}


class StoreError(Exception):
    pass


class StoreDamaged(StoreError):
    """The store file is not a sound SQLite database any more: nothing is written to it."""


# SQLite's primary result codes for a damaged file.
SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26
_MAGIC = b"SQLite format 3\x00"


def damaged(exc: BaseException) -> bool:
    """Is this error SQLite saying the file itself is damaged?"""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, StoreDamaged) or (
        code is not None and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
    )


# A row that fails alone: its values cannot be bound (a lone surrogate, an int past
# 64 bits, an unsupported type) or break a constraint. Anything else (a full disk, a
# lock, a damaged file) is the store's failure and fails the whole batch.
_ROW_ERRORS = (
    UnicodeError, OverflowError, ValueError, TypeError, sqlite3.InterfaceError,
    sqlite3.ProgrammingError, sqlite3.IntegrityError, sqlite3.DataError,
)  # fmt: skip


def storable(text: str) -> str:
    """Text SQLite can store as UTF-8: lone surrogates written out, never dropped.

    Bytes that came in through surrogateescape (file names, argv) read back as
    ``\\xff``; other lone surrogates as ``\\udcXX``.
    """
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _clean(row: dict[str, Any]) -> None:
    """Make every text field of a row storable, in place (only rows that failed)."""
    for key, value in row.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeError:
                row[key] = storable(value)


class Written(NamedTuple):
    """What one ``Writer.write`` stored, and what it refused."""

    events: int  # event rows stored
    holds: int  # hold rows stored
    refused: int  # hold rows refused: their key was already there
    dropped: int  # rows that could not be written even alone, after cleaning
    quiet: int = 0  # quiet records folded into the quiet rows


class Process(NamedTuple):
    """One writing process's row of the ``processes`` table."""

    pid: int
    started: float
    program: str
    mode: str
    figures: dict[str, int]


class Totals(NamedTuple):
    """The ``processes`` table summed: lockwatch's own health across every process."""

    processes: int
    dropped: int  # records dropped from a full buffer
    lost: int  # records that could not be stored
    inferred: int  # processes whose waits are inferred from timings
    live_missed: int  # events stored but not sent on the live path


def totals(conn: sqlite3.Connection) -> Totals:
    row = conn.execute(
        "SELECT count(*), COALESCE(sum(dropped), 0), COALESCE(sum(lost), 0),"
        " COALESCE(sum(capture_mode = 'inferred'), 0), COALESCE(sum(live_missed), 0)"
        " FROM processes"
    ).fetchone()
    return Totals(*(int(v) for v in row))


class Hold(NamedTuple):
    """One write-lock hold (a NamedTuple: the flusher makes one per transaction)."""

    key: str
    db: str
    pid: int
    conn_id: int
    thread: str | None
    context: str | None
    call_site: str | None
    sql: str | None
    lock_ts: float
    end_ts: float | None = None  # set for a hold already over when it is written
    end: str | None = None


_warned: set[str] = set()


def _private(path: Path) -> None:
    """Create the store 0600, or make an existing one (and its companions) 0600.

    SQLite creates ``-wal`` and ``-shm`` with the database file's mode, so they
    follow. A file of another user's keeps its mode, with one warning.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)
    for name in (path, *(Path(f"{path}{s}") for s in ("-wal", "-shm")), holders.path_for(path)):
        try:
            st = os.stat(name)
        except OSError:
            continue
        if not st.st_mode & 0o077 or not stat.S_ISREG(st.st_mode):
            continue
        if st.st_uid == os.geteuid():
            with contextlib.suppress(OSError):
                os.chmod(name, 0o600)
                continue
        if str(name) not in _warned:
            _warned.add(str(name))
            log.warning(
                "lockwatch: %s is readable by others (mode %o) and cannot be made 0600 by this"
                " user: it holds SQL text and call sites",
                name, stat.S_IMODE(st.st_mode),
            )  # fmt: skip


def connect(path: str | os.PathLike[str], *, readonly: bool = False) -> sqlite3.Connection:
    path = Path(path)
    if readonly:
        if not path.exists():
            raise StoreError(f"no lockwatch store at {path}")
        conn = original_connect(
            f"{path.as_uri()}?mode=ro", uri=True, timeout=5.0, check_same_thread=False
        )
    else:
        _private(path)
        conn = original_connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        migrate(conn)
    conn.row_factory = sqlite3.Row
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise StoreError(f"store schema {version} is newer than this lockwatch ({SCHEMA_VERSION})")
    with _immediate(conn):
        # Read again under the write lock: another process may have migrated meanwhile.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for stmt in MIGRATIONS[step]:
                conn.execute(stmt)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


_HOLD_INSERT = (
    "INSERT OR IGNORE INTO holds (key, db, pid, conn_id, thread, context, call_site, sql,"
    ' lock_ts, end_ts, "end") VALUES (?,?,?,?,?,?,?,?,?,?,?)'
)
_REPORT = (
    "INSERT INTO processes (pid, started, program, capture_mode, accepted, dropped,"
    " capture_errors, store_errors, lost, live_errors, live_missed, stored, ended, updated)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (pid, started) DO UPDATE SET"
    " capture_mode=excluded.capture_mode, accepted=excluded.accepted,"
    " dropped=excluded.dropped, capture_errors=excluded.capture_errors,"
    " store_errors=excluded.store_errors, lost=excluded.lost,"
    " live_errors=excluded.live_errors, live_missed=excluded.live_missed,"
    " stored=excluded.stored, ended=excluded.ended, updated=excluded.updated,"
    # A process that reports again was not dead (another pid namespace, a long stall):
    # its own figures stand, and nothing is inferred for it.
    " unflushed=NULL"
)


def _hold_values(h: Hold) -> tuple[Any, ...]:
    return (h.key, h.db, h.pid, h.conn_id, h.thread, h.context, h.call_site, h.sql, h.lock_ts,
            h.end_ts, h.end)  # fmt: skip


class Writer:
    """The flusher's handle on the store."""

    # Rows deleted per prune transaction: each holds the store's write lock briefly.
    PRUNE_CHUNK = 1000

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = connect(path)
        # Kept open while the connection is: closing any descriptor of the file would
        # drop every POSIX lock this process holds on it, SQLite's too, and another
        # process closing the store would then delete the WAL under our connection.
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.conn.close()
            raise
        self._inode = os.fstat(self._fd).st_ino

    @property
    def inode(self) -> int:
        return self._inode

    def moved(self) -> bool:
        """True when the file was deleted or replaced under us."""
        try:
            return os.stat(self.path).st_ino != self._inode
        except FileNotFoundError:
            return True

    def damage(self) -> str | None:
        """Why the file is no longer a SQLite database, if it is not: its header, read
        from the file. (Overwritten under an open WAL connection, a store keeps taking
        writes from SQLite's cache without an error, so the file is looked at.)"""
        try:
            head = os.pread(self._fd, len(_MAGIC), 0)
        except OSError:
            return None
        if head and head != _MAGIC:
            return "its header is not a SQLite database's"
        return None

    def close(self) -> None:
        try:
            self.conn.close()
        finally:
            os.close(self._fd)

    def write(
        self,
        rows: Sequence[dict[str, Any]],
        opened: Sequence[Hold],
        closed: Sequence[tuple[str, float, str]],
        process: Process | None = None,
        quiet: Sequence[rollup.QuietRow] = (),
        folded: int = 0,
    ) -> Written:
        """Insert rows, hold changes and the process's counters in one transaction.

        Sets each stored row's ``id`` (None for a row that could not be written). A row
        that cannot be bound is cleaned (every text field made storable) and retried
        alone; one that still fails is dropped alone and counted in ``Written``. The
        process row, when given, already counts this batch, so whatever it says was
        stored is in the store (what an unflushed process lost is inferred from it).
        ``quiet`` rows count ``folded`` records (quiet writes and their holds' locks).
        """
        conn = self.conn
        try:
            with _immediate(conn):
                holds = refused = dropped = 0
                if opened:
                    holds, refused, dropped = self._insert_holds(opened)
                if closed:
                    conn.executemany(
                        'UPDATE holds SET end_ts = ?, "end" = ? WHERE key = ?',
                        [(end_ts, end, key) for key, end_ts, end in closed],
                    )
                # Ids are given here, in capture order, under our write lock: each kind's
                # rows then go in one executemany however the kinds interleave.
                (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
                by_kind: dict[str, list[dict[str, Any]]] = {}
                for row in rows:
                    top += 1
                    row["id"] = top
                    kind = row["kind"]
                    run = by_kind.get(kind)
                    if run is None:
                        run = by_kind[kind] = []
                    run.append(row)
                for kind, run in by_kind.items():
                    dropped += self._insert_events(kind, run)
                stored = [row for row in rows if row["id"] is not None] if dropped else rows
                if quiet:
                    conn.executemany(rollup.QUIET_INSERT, quiet)
                # Same transaction: the rollup never disagrees.
                rollup.apply(conn, stored, quiet=quiet)
                written = Written(len(stored), holds, refused, dropped, folded)
                if process is not None:
                    figures = dict(process.figures)
                    figures["stored"] += written.events + written.holds + written.quiet
                    figures["lost"] += written.refused + written.dropped
                    self.report(*process[:4], figures)
        except BaseException:
            for row in rows:
                row["id"] = None  # rolled back: none of them is stored
            raise
        return written

    # No savepoints: inside one, SQLite copies every page a batch first touches to a
    # sub-journal (14% of the flusher's time here). A failed executemany has inserted
    # exactly the rows before the bad one (each is its own statement), which
    # total_changes counts, so the rest are retried one by one from there.

    def _insert_holds(self, opened: Sequence[Hold]) -> tuple[int, int, int]:
        """(stored, refused because the key exists, dropped): hold rows."""
        conn = self.conn
        before = conn.total_changes
        dropped = 0
        try:
            conn.executemany(_HOLD_INSERT, [_hold_values(h) for h in opened])
        except _ROW_ERRORS:
            for h in opened:  # those already in are ignored this time: not counted twice
                try:
                    self._insert_one(_HOLD_INSERT, _hold_values(h))
                except _ROW_ERRORS:
                    dropped += 1
        stored = conn.total_changes - before
        return stored, len(opened) - stored - dropped, dropped

    def _insert_events(self, kind: str, run: list[dict[str, Any]]) -> int:
        """Insert one kind's rows; the number dropped (their ids set to None)."""
        conn = self.conn
        insert, values = _BY_KIND[kind]
        before = conn.total_changes
        try:
            conn.executemany(insert, [values(row) for row in run])
            return 0
        except _ROW_ERRORS:
            pass
        dropped = 0
        # Only this slow path pays for cleaning text.
        for row in run[conn.total_changes - before :]:
            try:
                conn.execute(insert, values(row))
                continue
            except _ROW_ERRORS:
                pass
            _clean(row)
            try:
                conn.execute(insert, values(row))
            except _ROW_ERRORS:
                row["id"] = None
                dropped += 1
        return dropped

    def _insert_one(self, sql: str, args: tuple[Any, ...]) -> None:
        """One row, cleaned and retried if it cannot be bound."""
        try:
            self.conn.execute(sql, args)
        except _ROW_ERRORS:
            self.conn.execute(sql, tuple(storable(a) if isinstance(a, str) else a for a in args))

    def reap_abandoned(self, alive: Callable[[int], bool], now: float) -> int:
        """Close the holds of processes that died holding the write lock.

        SQLite releases a dead process's locks; its transaction never ends, so
        it is recorded here as ``abandoned``, once, by whichever process sees it.
        """
        dead = [
            r for r in self.conn.execute("SELECT * FROM holds WHERE end_ts IS NULL").fetchall()
            if not alive(r["pid"])
        ]  # fmt: skip
        if not dead:
            return 0
        names = [c.name for c in EVENT_COLUMNS]
        with _immediate(self.conn):
            reaped: list[dict[str, Any]] = []
            for r in dead:
                cur = self.conn.execute(
                    "UPDATE holds SET end_ts = ?, \"end\" = 'abandoned'"
                    " WHERE key = ? AND end_ts IS NULL",
                    (now, r["key"]),
                )
                if not cur.rowcount:
                    continue  # another process reaped it first
                row = events.row(
                    kind="transaction", ts=r["lock_ts"], end="abandoned", db=r["db"],
                    pid=r["pid"], conn_id=r["conn_id"], thread=r["thread"],
                    context=r["context"], lock_ts=r["lock_ts"], lock_sql=r["sql"],
                    lock_call_site=r["call_site"], call_site=r["call_site"],
                    # An upper bound: the process died some time before it was noticed.
                    hold_ms=round((now - r["lock_ts"]) * 1000.0, 3),
                    duration_ms=round((now - r["lock_ts"]) * 1000.0, 3),
                )  # fmt: skip
                self.conn.execute(_INSERT_EVENT, [row[n] for n in names])
                reaped.append(row)
            rollup.apply(self.conn, reaped)
        return len(reaped)

    def reap_unflushed(
        self, alive: Callable[[int], bool], now: float, own: tuple[int, float], stale: float = 10.0
    ) -> list[tuple[int, str, int]]:
        """Processes that died without their final flush: (pid, program, records lost).

        A process's row counts, in the same transaction as each write, what it has
        stored; everything it had accepted by its last row and neither stored nor
        counted lost was still in its buffer, and no later write came. That is a
        lower bound (possibly 0): what it accepted after its last row is unknown.
        Marked ``killed`` once, with that number in ``unflushed`` and added to
        ``lost``, by whichever process finds it.
        """
        me, started = own
        found = self.conn.execute(
            "SELECT pid, started, program, max(accepted - stored - lost, 0) AS n"
            " FROM processes WHERE ended IS NULL AND stored IS NOT NULL AND updated < ?",
            (now - stale,),
        ).fetchall()
        # Our own pid in another row is a process that died before us (pid reuse).
        dead = [
            r for r in found
            if (r["started"] != started if r["pid"] == me else not alive(r["pid"]))
        ]  # fmt: skip
        out: list[tuple[int, str, int]] = []
        if not dead:
            return out
        with _immediate(self.conn):
            for r in dead:
                cur = self.conn.execute(
                    "UPDATE processes SET ended = 'killed', unflushed = ?, lost = lost + ?"
                    " WHERE pid = ? AND started = ? AND ended IS NULL",
                    (r["n"], r["n"], r["pid"], r["started"]),
                )
                if cur.rowcount:
                    out.append((r["pid"], r["program"], r["n"]))
        return out

    def report(
        self, pid: int, started: float, program: str, mode: str, figures: dict[str, Any],
        ended: bool = False,
    ) -> None:  # fmt: skip
        """The process's counters; ``ended``: its final report, after its last flush."""
        self.conn.execute(
            _REPORT,
            (
                pid, started, storable(program), mode, figures["accepted"], figures["dropped"],
                figures["capture_errors"], figures["store_errors"], figures["lost"],
                figures["live_errors"], figures["live_missed"], figures.get("stored"),
                "exit" if ended else None, time.time(),
            ),
        )  # fmt: skip

    def prune(self, max_age: float | None, max_rows: int | None, batch: int = 5000) -> int:
        """Delete the oldest events, quiet writes and holds past the limits
        (``lockwatch.store.retention``); the number of events deleted."""
        return retention.Pruner(self.conn, self.PRUNE_CHUNK).prune(max_age, max_rows, batch)
