"""The one definition of a lockwatch event.

The store's columns, the CSV header and the websocket payload all come from
``COLUMNS``. Capture does not build these rows itself: it appends cheap raw
records to the buffer, and the flusher turns them into rows with ``row()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

KINDS = ("query", "transaction", "wait", "busy", "request")
CLASSIFICATIONS = ("timeout", "upgrade", "snapshot", "locked", "other")
STATEMENT_CLASSES = ("read", "write", "ddl", "begin", "commit", "rollback", "pragma", "other")
BEGIN_MODES = ("deferred", "immediate", "exclusive")
TRANSACTION_ENDS = ("commit", "rollback", "error", "abandoned")
WAIT_OUTCOMES = ("acquired", "gave_up")
CAPTURE_MODES = ("exact", "inferred")


@dataclass(frozen=True)
class Column:
    name: str
    sqltype: str  # the store's column type
    doc: str


# The first fifteen are the fixed CSV header, in this order. Add new columns at
# the end only: CSV readers and the store's schema version depend on it.
COLUMNS: tuple[Column, ...] = (
    Column("ts", "REAL", "UTC start time; ISO-8601 with microseconds in CSV"),
    Column("kind", "TEXT", "query, transaction, wait, busy or request"),
    Column("classification", "TEXT", "busy only: timeout, upgrade, snapshot, locked or other"),
    Column("duration_ms", "REAL", "wall time of the statement, transaction or request"),
    Column("wait_ms", "REAL", "time spent waiting for a lock"),
    Column("hold_ms", "REAL", "write-lock hold time (transactions and autocommit writes)"),
    Column("sql", "TEXT", "SQL text, without parameter values"),
    Column("call_site", "TEXT", "first frame in your code: path.py:LINE in function"),
    Column("context", "TEXT", "request:METHOD /path, command:NAME, test:NODEID or program:NAME"),
    Column("pid", "INTEGER", "process id"),
    Column("thread", "TEXT", "thread name"),
    Column("db", "TEXT", "absolute path of the watched database file"),
    Column("blocker_pid", "INTEGER", "wait/busy: pid of the transaction holding the write lock"),
    Column(
        "blocker_call_site",
        "TEXT",
        "wait/busy: where the blocker took the lock; outside (another program), readers or"
        " wal-read",
    ),
    Column(
        "blocker_context", "TEXT", "wait/busy: the blocker's context; outside, readers or wal-read"
    ),
    # Extra columns.
    Column("id", "INTEGER", "the store's row id"),
    Column("thread_id", "INTEGER", "thread ident"),
    Column("task", "TEXT", "asyncio task name, when there is one"),
    Column("alias", "TEXT", "Django database alias"),
    Column("conn_id", "INTEGER", "connection number within the process"),
    Column("capture_mode", "TEXT", "exact (busy handler) or inferred (from timings)"),
    Column("stmt_class", "TEXT", "read, write, ddl, begin, commit, rollback, pragma or other"),
    Column("fingerprint", "TEXT", "SQL with literals replaced by ?"),
    Column("rows", "INTEGER", "rows changed by a write"),
    Column("params", "TEXT", "parameter values, only when CAPTURE_PARAMS is on"),
    Column("error_code", "INTEGER", "SQLite extended error code"),
    Column("error_name", "TEXT", "SQLite error name, e.g. SQLITE_BUSY_SNAPSHOT"),
    Column("message", "TEXT", "the error message"),
    Column("outcome", "TEXT", "wait: acquired or gave_up"),
    Column("begin_mode", "TEXT", "transaction: deferred, immediate or exclusive"),
    Column("end", "TEXT", "transaction: commit, rollback, error or abandoned"),
    Column("lock_ts", "REAL", "transaction: when the write lock was taken"),
    Column("lock_sql", "TEXT", "transaction: the statement that took the write lock"),
    Column("lock_call_site", "TEXT", "transaction: where that statement ran"),
    Column("statements", "INTEGER", "transaction: statement count"),
    Column("request_id", "TEXT", "request id from the middleware"),
    Column("method", "TEXT", "request method"),
    Column("path", "TEXT", "request path"),
    Column("view", "TEXT", "route or view name"),
    Column("status", "INTEGER", "request: response status"),
    Column("queries", "INTEGER", "request: query count"),
    Column("db_ms", "REAL", "request: time in the database"),
    Column("busy_count", "INTEGER", "request: busy errors"),
    Column("blocker_thread", "TEXT", "wait/busy: the blocker's thread"),
    Column("blocker_held_ms", "REAL", "wait/busy: how long the blocker had held the lock"),
    Column("blockers", "INTEGER", "wait/busy: how many holders the wait was behind"),
    # Schema 6: the holder table.
    Column(
        "blocker_split",
        "TEXT",
        "wait/busy: JSON list of what the wait was behind and for how long, largest first:"
        " [{blocker, kind (holder, readers, outside or wal-read), pid, ms}]",
    ),
    Column(
        "blocker_same_thread",
        "INTEGER",
        "wait/busy: 1 when the blocker is the waiter's own thread (it cannot succeed)",
    ),
    Column(
        "user_stack",
        "TEXT",
        "wait/busy/transaction: up to 5 frames of your code, innermost first, joined by ' < '",
    ),
    # Schema 8.
    Column(
        "txn_reads",
        "TEXT",
        "busy/transaction: JSON list of the reads the transaction ran before it tried to write,"
        " [{call_site, ts, ms}], first 16: kept for a busy error, and for a transaction that"
        " waited past SLOW_QUERY_MS",
    ),
)
# The columns of the first schema; later ones are added by migrations.
V1_NAMES = frozenset(c.name for c in COLUMNS[: [c.name for c in COLUMNS].index("blockers") + 1])

NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
CSV_HEADER: tuple[str, ...] = NAMES
FIXED_CSV_HEADER: tuple[str, ...] = NAMES[:15]
INDEX: dict[str, int] = {name: i for i, name in enumerate(NAMES)}

# What a hold is, in SQL: a transaction that took the write lock, or an autocommit write.
TXN_HOLD = "kind = 'transaction' AND hold_ms IS NOT NULL"
WRITE_HOLD = "kind = 'query' AND hold_ms IS NOT NULL"
HOLD = "kind IN ('transaction', 'query') AND hold_ms IS NOT NULL"
# A time window: ts between two parameters, both ends included.
IN_WINDOW = "ts >= ? AND ts <= ?"

UNKNOWN = "unknown"
# What a wait can be behind, besides an instrumented holder.
OUTSIDE = "outside"  # another program holds the file
READERS = "readers"  # the waiter's own COMMIT holds the lock and waits for read transactions
# An instrumented process holds it with no write under way: in WAL mode, a reader
# takes the write lock for an instant to read an index a writer is changing.
WAL_READ = "wal-read"

_COMMON = (
    "ts", "kind", "duration_ms", "context", "pid", "thread", "thread_id", "task",
    "request_id", "method", "path", "view",
)  # fmt: skip
_ON_CONNECTION = ("db", "alias", "conn_id", "capture_mode")
_STATEMENT = ("sql", "fingerprint", "stmt_class", "call_site", "wait_ms")
_BLOCKER = (
    "blocker_pid", "blocker_call_site", "blocker_context", "blocker_thread",
    "blocker_held_ms", "blockers", "blocker_split", "blocker_same_thread",
)  # fmt: skip

# The columns each kind can fill; the others are always empty for it. The
# store binds only these, which keeps the flusher's share of the GIL small.
KIND_COLUMNS: dict[str, tuple[str, ...]] = {
    "query": _COMMON + _ON_CONNECTION + _STATEMENT + ("hold_ms", "rows", "params"),
    "wait": _COMMON + _ON_CONNECTION + _STATEMENT + ("outcome", "user_stack") + _BLOCKER,
    "busy": _COMMON + _ON_CONNECTION + _STATEMENT
    + ("classification", "error_code", "error_name", "message", "user_stack", "txn_reads")
    + _BLOCKER,
    "transaction": _COMMON + _ON_CONNECTION + (
        "wait_ms", "hold_ms", "begin_mode", "end", "call_site", "lock_ts", "lock_sql",
        "lock_call_site", "statements", "user_stack", "txn_reads",
    ),
    "request": _COMMON + ("wait_ms", "status", "queries", "db_ms", "busy_count"),
}  # fmt: skip


def row(**values: Any) -> dict[str, Any]:
    """A full event row: every column present, unknown names refused."""
    bad = set(values) - INDEX.keys()
    if bad:
        raise KeyError(f"not event columns: {sorted(bad)}")
    return {name: values.get(name) for name in NAMES}


def iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> float:
    """Seconds since the epoch; a naive time is taken as UTC."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def format_call_site(path: str, line: int, function: str) -> str:
    return f"{path}:{line} in {function}"
