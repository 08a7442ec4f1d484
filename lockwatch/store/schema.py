"""The store's schema: its tables as version 1 made them, and each migration since.

Every stored shape is defined once: the events table's columns come from
``events.COLUMNS``; the holds, processes and meta tables are here, the rollup's in
``rollup.SCHEMA`` and the quiet writes' in ``rollup.QUIET_SCHEMA``. ``store.migrate``
moves a store up to ``SCHEMA_VERSION``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

from lockwatch import events
from lockwatch.store import rollup

SCHEMA_VERSION = 9

EVENT_COLUMNS = [c for c in events.COLUMNS if c.name != "id"]
# The events table as version 1 made it; columns added since come by migration.
_V1_COLUMNS = [c for c in EVENT_COLUMNS if c.name in events.V1_NAMES]
_ADDED_IN_6 = ("blocker_split", "blocker_same_thread", "user_stack")
_ADDED_IN_8 = ("txn_reads",)


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
    # Long windows: hold and duration histograms per minute and hour (lockwatch.store.rollup),
    # filled from the events already stored; waits and busy errors by their blocker.
    5: [*rollup.SCHEMA, *rollup.BACKFILL, rollup.WAITS_INDEX],
    # Blockers come from the live holder table at capture: the split of each wait,
    # and whether the blocker was the waiter's own thread. Nothing waits to be
    # attributed any more.
    6: [
        *(
            f'ALTER TABLE events ADD COLUMN "{c.name}" {c.sqltype}'
            for c in EVENT_COLUMNS
            if c.name in _ADDED_IN_6
        ),
        "DROP INDEX IF EXISTS events_unattributed",
        # Only the store-side attribution read these; each cost every write an index entry.
        "DROP INDEX IF EXISTS events_autocommit_end",
        "DROP INDEX IF EXISTS holds_db_end",
    ],
    # Each process's records stored (events and holds, counted in the same transaction
    # as each write) and how it ended: ``exit`` after its final flush, or ``killed``
    # when another process found it dead without one; then ``unflushed`` is what its
    # last row says it had captured and not stored (a lower bound, also in ``lost``).
    7: [
        "ALTER TABLE processes ADD COLUMN stored INTEGER",
        "ALTER TABLE processes ADD COLUMN ended TEXT",
        "ALTER TABLE processes ADD COLUMN unflushed INTEGER",
        # The processes not known to have ended, for reap_unflushed every second.
        "CREATE INDEX IF NOT EXISTS processes_open ON processes (updated) WHERE ended IS NULL",
    ],
    # What a transaction read before it tried to write (an upgrade error's cause).
    8: ['ALTER TABLE events ADD COLUMN "txn_reads" TEXT'],
    # Quiet writes: counted per second and call site, not stored one by one (issue 18).
    9: rollup.QUIET_SCHEMA,
}
assert {c.name for c in EVENT_COLUMNS} == {c.name for c in _V1_COLUMNS} | set(_ADDED_IN_6) | set(
    _ADDED_IN_8
)


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, its lock taken at BEGIN; rolled back if anything fails."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
