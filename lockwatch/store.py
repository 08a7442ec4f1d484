"""lockwatch's own event store: a separate SQLite file in WAL mode.

Several processes write to it at once (short IMMEDIATE transactions), and the
dashboard, export and doctor read it. It is opened with the plain ``sqlite3``
module, so its queries never pass through lockwatch's capture.
"""

from __future__ import annotations

import contextlib
import operator
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from . import events, rollup
from .rawsqlite import original_connect

SCHEMA_VERSION = 6

_EVENT_COLUMNS = [c for c in events.COLUMNS if c.name != "id"]
# The events table as version 1 made it; columns added since come by migration.
_V1_COLUMNS = [c for c in _EVENT_COLUMNS if c.name in events.V1_NAMES]
_ADDED_IN_6 = ("blocker_split", "blocker_same_thread", "user_stack")


def _insert(names: Sequence[str]) -> str:
    return "INSERT INTO events ({}) VALUES ({})".format(
        ", ".join(f'"{n}"' for n in names), ", ".join("?" for _ in names)
    )


_INSERT_EVENT = _insert([c.name for c in _EVENT_COLUMNS])
# Per kind: the insert binds the id and only the columns that kind can fill.
_BY_KIND = {
    kind: (_insert(("id", *names)), operator.itemgetter("id", *names))
    for kind, names in events.KIND_COLUMNS.items()
}

# Version 1: the tables. Each later version's statements move a store up one.
_SCHEMA_V1 = [
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, {})".format(
        ", ".join(f'"{c.name}" {c.sqltype}' for c in _V1_COLUMNS)
    ),
    "CREATE INDEX IF NOT EXISTS events_ts ON events (ts)",
    "CREATE INDEX IF NOT EXISTS events_call_site ON events (call_site)",
    # Waits and busy errors still looking for their blocker.
    "CREATE INDEX IF NOT EXISTS events_unattributed ON events (ts)"
    " WHERE blocker_context IS NULL AND kind IN ('wait', 'busy')",
    # One row per write-lock hold, open until its transaction ends.
    """CREATE TABLE IF NOT EXISTS holds (
        key TEXT PRIMARY KEY, db TEXT NOT NULL, pid INTEGER, conn_id INTEGER, thread TEXT,
        context TEXT, call_site TEXT, sql TEXT, lock_ts REAL NOT NULL, end_ts REAL, "end" TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS holds_db_lock ON holds (db, lock_ts)",
    "CREATE INDEX IF NOT EXISTS holds_open ON holds (end_ts) WHERE end_ts IS NULL",
    # Each writing process's own counters, for the dashboard's health figures.
    """CREATE TABLE IF NOT EXISTS processes (
        pid INTEGER NOT NULL, started REAL NOT NULL, program TEXT, capture_mode TEXT,
        accepted INTEGER, dropped INTEGER, capture_errors INTEGER, store_errors INTEGER,
        lost INTEGER, live_errors INTEGER, live_missed INTEGER, updated REAL,
        PRIMARY KEY (pid, started)
    )""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
]

# The end of an autocommit write's hold; the attribution query repeats this
# expression exactly, so SQLite can use the index built on it.
_AUTOCOMMIT_END = "ts + (COALESCE(wait_ms, 0) + hold_ms) / 1000.0"

MIGRATIONS: dict[int, list[str]] = {
    1: _SCHEMA_V1,
    # The dashboard's per-kind aggregates read these columns straight from the index.
    2: [
        "DROP INDEX IF EXISTS events_kind_ts",
        "CREATE INDEX IF NOT EXISTS events_kind_ts_cover"
        " ON events (kind, ts, hold_ms, duration_ms, wait_ms)",
    ],
    # Blocker attribution: holds that ended after a wait began, and autocommit writes.
    3: [
        "CREATE INDEX IF NOT EXISTS holds_db_end ON holds (db, end_ts)",
        "CREATE INDEX IF NOT EXISTS events_autocommit ON events (db, ts)"
        " WHERE kind = 'query' AND hold_ms IS NOT NULL",
    ],
    # Autocommit writes by the end of their hold: a wait's candidates are then the
    # writes that ended after it began, not every write of the lookback.
    4: [
        "DROP INDEX IF EXISTS events_autocommit",
        f"CREATE INDEX IF NOT EXISTS events_autocommit_end ON events (db, {_AUTOCOMMIT_END})"
        " WHERE kind = 'query' AND hold_ms IS NOT NULL",
    ],
    # Long windows: hold and duration histograms per minute and hour (lockwatch.rollup),
    # filled from the events already stored; waits and busy errors by their blocker.
    5: [*rollup.SCHEMA, *rollup.BACKFILL, rollup.WAITS_INDEX],
    # Blockers come from the live holder table at capture: the split of each wait,
    # and whether the blocker was the waiter's own thread. Nothing waits to be
    # attributed any more.
    6: [
        *(
            f'ALTER TABLE events ADD COLUMN "{c.name}" {c.sqltype}'
            for c in _EVENT_COLUMNS
            if c.name in _ADDED_IN_6
        ),
        "DROP INDEX IF EXISTS events_unattributed",
        # Only the store-side attribution read these; each cost every write an index entry.
        "DROP INDEX IF EXISTS events_autocommit_end",
        "DROP INDEX IF EXISTS holds_db_end",
    ],
}
assert {c.name for c in _EVENT_COLUMNS} == {c.name for c in _V1_COLUMNS} | set(_ADDED_IN_6)


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, its lock taken at BEGIN; rolled back if anything fails."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class StoreError(Exception):
    pass


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


def _create_private(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def connect(path: str | os.PathLike[str], *, readonly: bool = False) -> sqlite3.Connection:
    path = Path(path)
    if readonly:
        if not path.exists():
            raise StoreError(f"no lockwatch store at {path}")
        conn = original_connect(
            f"{path.as_uri()}?mode=ro", uri=True, timeout=5.0, check_same_thread=False
        )
    else:
        _create_private(path)
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


class Writer:
    """The flusher's handle on the store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = connect(path)
        self._inode = os.stat(path).st_ino

    def moved(self) -> bool:
        """True when the file was deleted or replaced under us."""
        try:
            return os.stat(self.path).st_ino != self._inode
        except FileNotFoundError:
            return True

    def close(self) -> None:
        self.conn.close()

    def write(
        self,
        rows: Sequence[dict[str, Any]],
        opened: Sequence[Hold],
        closed: Sequence[tuple[str, float, str]],
    ) -> None:
        """Insert rows and hold changes in one transaction; sets each row's ``id``."""
        conn = self.conn
        with _immediate(conn):
            if opened:
                conn.executemany(
                    "INSERT OR IGNORE INTO holds (key, db, pid, conn_id, thread, context,"
                    ' call_site, sql, lock_ts, end_ts, "end") VALUES (?,?,?,?,?,?,?,?,?,?,?)',
                    [
                        (h.key, h.db, h.pid, h.conn_id, h.thread, h.context, h.call_site,
                         h.sql, h.lock_ts, h.end_ts, h.end)
                        for h in opened
                    ],
                )  # fmt: skip
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
                insert, values = _BY_KIND[kind]
                conn.executemany(insert, [values(row) for row in run])
            rollup.apply(conn, rows)  # same transaction: the rollup never disagrees

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
        names = [c.name for c in _EVENT_COLUMNS]
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

    def report(self, pid: int, started: float, program: str, mode: str, figures: dict) -> None:
        self.conn.execute(
            "INSERT INTO processes (pid, started, program, capture_mode, accepted, dropped,"
            " capture_errors, store_errors, lost, live_errors, live_missed, updated)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (pid, started) DO UPDATE SET"
            " capture_mode=excluded.capture_mode, accepted=excluded.accepted,"
            " dropped=excluded.dropped, capture_errors=excluded.capture_errors,"
            " store_errors=excluded.store_errors, lost=excluded.lost,"
            " live_errors=excluded.live_errors, live_missed=excluded.live_missed,"
            " updated=excluded.updated",
            (
                pid, started, program, mode, figures["accepted"], figures["dropped"],
                figures["capture_errors"], figures["store_errors"], figures["lost"],
                figures["live_errors"], figures["live_missed"], time.time(),
            ),
        )  # fmt: skip

    def prune(self, max_age: float | None, max_rows: int | None, batch: int = 5000) -> int:
        """Delete old events in small batches, so no write lock is held for long."""
        removed = 0
        if max_age is not None:
            cutoff = time.time() - max_age
            removed += self._delete_batch("ts < ?", (cutoff,), batch)
            self.conn.execute(
                "DELETE FROM holds WHERE end_ts IS NOT NULL AND end_ts < ?", (cutoff,)
            )
        if max_rows is not None:
            row = self.conn.execute("SELECT max(id) - min(id) + 1 FROM events").fetchone()
            excess = (row[0] or 0) - max_rows
            if excess > 0:
                (floor,) = self.conn.execute("SELECT min(id) FROM events").fetchone()
                removed += self._delete_batch("id < ?", (floor + min(excess, batch),), batch)
        return removed

    def _delete_batch(self, where: str, args: tuple[Any, ...], batch: int) -> int:
        conn = self.conn
        with _immediate(conn):
            # The rows themselves, so the rollup loses exactly what the events lose.
            rows = conn.execute(
                "SELECT id, kind, ts, hold_ms, duration_ms, lock_call_site, call_site"
                f" FROM events WHERE {where} LIMIT ?",
                (*args, batch),
            ).fetchall()
            rollup.apply(conn, rows, sign=-1)
            conn.executemany("DELETE FROM events WHERE id = ?", [(r[0],) for r in rows])
        return len(rows)


# -- reading ------------------------------------------------------------------


def iter_events(
    conn: sqlite3.Connection,
    where: str = "",
    args: Iterable[Any] = (),
    chunk: int = 2000,
) -> Iterator[sqlite3.Row]:
    """Stream events in chunks (keyset pagination), so memory stays flat."""
    clause = f" AND ({where})" if where else ""
    args = tuple(args)
    last = 0
    while True:
        rows = conn.execute(
            f"SELECT * FROM events WHERE id > ?{clause} ORDER BY id LIMIT ?",
            (last, *args, chunk),
        ).fetchall()
        if not rows:
            return
        yield from rows
        last = rows[-1]["id"]
        if len(rows) < chunk:
            return
