"""The live holder table itself: torn reads, dead processes, the operating system's view."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from lockwatch import holders
from lockwatch.capture import oslocks
from tests.conftest import ROOT

WRITER = """
import sys, time
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from lockwatch import holders
table = holders.Table(Path(sys.argv[1]))
slot = table.claim()
print(slot.index, flush=True)
key = holders.db_key("/db")
stop = time.monotonic() + float(sys.argv[3])
a = (holders.HOLDING, key, 1, 1, 1, 1.0, b"a" * 90, b"A" * 120, b"t", b"x" * 100)
b = (holders.RUNNING, key, 2, 2, 2, 2.0, b"b" * 90, b"B" * 120, b"t", b"y" * 100)
n = 0
while time.monotonic() < stop:
    slot.fill(*(a if n % 2 else b))
    n += 1
print(n, flush=True)
"""


def test_a_reader_never_takes_a_half_written_slot(tmp_path: Path):
    """Another process rewrites one slot as fast as it can; every read is whole."""
    path = tmp_path / "holders"
    table = holders.Table(path)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(ROOT), "1.5"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    index = int(writer.stdout.readline())
    seen = {1: 0, 2: 0}
    deadline = time.monotonic() + 1.2
    while time.monotonic() < deadline:
        h = table.read(index)
        if h is None or h.state == holders.IDLE:
            continue
        # The numbers and the texts come from the same write, never from two.
        if h.conn_id == 1:
            assert (h.state, h.context, h.call_site, h.since) == (
                holders.HOLDING, "a" * 90, "A" * 120, 1.0)  # fmt: skip
        else:
            assert (h.conn_id, h.state, h.context, h.call_site, h.since) == (
                2, holders.RUNNING, "b" * 90, "B" * 120, 2.0)  # fmt: skip
        seen[h.conn_id] += 1
    writes = int(writer.stdout.readline())
    writer.wait(10)
    assert writes > 1000 and seen[1] > 100 and seen[2] > 100


def test_a_slot_says_since_when_it_holds(tmp_path: Path):
    """set_since writes the time only when it changed (the statement's start, filled
    before it, most often is); a reader sees the state and time last set, either way."""
    table = holders.Table(tmp_path / "holders")
    slot = table.claim()
    key = holders.db_key("/db")

    def seen() -> tuple[int, float]:
        h = table.read(slot.index)
        assert h is not None
        return h.state, h.since

    slot.fill(holders.RUNNING, key, 1, 1, 1, 1.0, b"c", b"s", b"t", b"q")
    slot.set_since(holders.HOLDING, 1.0)
    assert seen() == (holders.HOLDING, 1.0)
    slot.set_since(holders.HOLDING, 2.0)
    assert seen() == (holders.HOLDING, 2.0)
    slot.set_state(holders.IDLE)
    slot.set_since(holders.HOLDING, 2.0)
    assert seen() == (holders.HOLDING, 2.0)
    slot.fill(holders.RUNNING, key, 1, 1, 2, 3.0, b"c", b"s", b"t", b"q")
    assert seen() == (holders.RUNNING, 3.0)
    slot.set_since(holders.HOLDING, 2.0)
    assert seen() == (holders.HOLDING, 2.0)


DIES = """
import os, sys, time
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from lockwatch import holders
table = holders.Table(Path(sys.argv[1]))
slot = table.claim()
slot.fill(holders.HOLDING, holders.db_key("/db"), 7, 7, 7, time.time(), b"command:batch",
          b"app/batch.py:3 in run", b"MainThread", b"UPDATE t SET x = 1")
print(slot.index, flush=True)
os._exit(0)  # dies holding: never releases its slot
"""


def test_a_slot_left_by_a_dead_process_is_abandoned_and_reused(tmp_path: Path):
    path = tmp_path / "holders"
    out = subprocess.run(
        [sys.executable, "-c", DIES, str(path), str(ROOT)], capture_output=True, text=True
    )
    index = int(out.stdout)
    table = holders.Table(path)
    ((h, abandoned),) = table.snapshot()
    assert (h.context, h.call_site, abandoned) == ("command:batch", "app/batch.py:3 in run", True)
    # SQLite let go of a dead process's locks: it blocks nobody.
    assert table.holder(holders.db_key("/db"), None) == (None, None)
    # And its slot is taken again by the next process that needs one.
    assert {table.claim().index, table.claim().index} >= {index}


def test_the_operating_system_names_the_holding_process(tmp_path: Path):
    """F_GETLK on SQLite's lock bytes: another process's write lock, rollback and WAL."""
    for journal in ("delete", "wal"):
        db = tmp_path / f"{journal}.sqlite3"
        conn = sqlite3.connect(db)
        conn.execute(f"PRAGMA journal_mode={journal}")
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        locks = oslocks.FileLocks(str(db))
        assert locks.holder_pid() == 0
        holder = subprocess.Popen(
            [sys.executable, "-c",
             "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
             " c.execute('BEGIN IMMEDIATE'); print('held', flush=True); time.sleep(30)", str(db)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert holder.stdout.readline().strip() == "held"
            locks = oslocks.FileLocks(str(db))
            assert locks.holder_pid() == holder.pid
        finally:
            holder.kill()
            holder.wait()
        locks = oslocks.FileLocks(str(db))
        assert locks.holder_pid() == 0
        conn.close()


HOLD = (
    "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
    " c.execute('BEGIN IMMEDIATE'); print('held', flush=True); time.sleep(30)"
)


def test_a_wal_index_made_again_is_looked_at_at_once(tmp_path: Path):
    """The last connection to close a WAL database deletes its -shm; the next one
    makes a new file. A holder's lock on the new one is seen within the second the
    old file's descriptor would otherwise be trusted."""
    db = tmp_path / "wal.sqlite3"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    locks = oslocks.FileLocks(str(db))
    pids = []
    for _ in range(2):
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(db)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout.readline().strip() == "held"
            inode = (tmp_path / "wal.sqlite3-shm").stat().st_ino
            pids.append(locks.holder_pid())
        finally:
            holder.kill()
            holder.wait()
        # Its process gone, a connection opens and closes: the -shm is deleted.
        closer = sqlite3.connect(db)
        closer.execute("SELECT count(*) FROM t").fetchone()
        closer.close()
        assert not (tmp_path / "wal.sqlite3-shm").exists()
        if len(pids) == 1:
            first = (holder.pid, inode)
    assert pids[0] == first[0]
    assert pids[1] == holder.pid  # a new -shm (inode reuse aside) and a new holder


def test_a_process_is_known_to_use_a_database_by_its_slots(tmp_path: Path):
    table = holders.Table(tmp_path / "holders")
    slot = table.claim()
    key, other = holders.db_key("/a.sqlite3"), holders.db_key("/b.sqlite3")
    assert not table.uses(table.pid, key)  # claimed, but for no database yet
    slot.fill(holders.IDLE, key, 1, 1, 0, 0.0, b"", b"", b"", b"", holders.BRIEF)
    assert table.uses(table.pid, key)
    assert not table.uses(table.pid, other)
    assert not table.uses(table.pid + 1, key)
