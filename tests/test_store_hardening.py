"""The store never loses data silently (issue 19).

A row that cannot be written costs that row alone, and is counted; retention holds
under load; a refused hold, a process killed before its flush and a damaged store file
are all counted; the store's files are private.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connections, transaction

from lockwatch import events, holders, pipeline, store
from lockwatch.pipeline.flusher import Flusher
from tests.conftest import ROOT
from tests.project.shop.models import Item
from tests.support.pipeline import fresh_pipeline
from tests.support.servers import project_env

MANAGE = ROOT / "tests" / "project" / "manage.py"


def read(path: Path, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


# -- a row that cannot be written costs that row alone -------------------------------------


def test_a_lone_surrogate_in_a_statement_costs_nothing(tmp_path: Path, watched):
    """A failed statement with '\\udcff' in its text is recorded, and its batch with it."""
    with fresh_pipeline(tmp_path / "store.sqlite3", FLUSH_INTERVAL=3600):
        db = watched()
        pipeline.flush()
        for i in range(300):
            Item.objects.using(db).create(name=f"before {i}")
        with pytest.raises(UnicodeEncodeError), connections[db].cursor() as cur:
            cur.execute("SELECT 'caf\udcff'")  # the app's own error, unchanged
        for i in range(300):
            Item.objects.using(db).create(name=f"after {i}")
        assert len(pipeline.current_buffer()) > 600  # all of it in one flush
        pipeline.flush()
        counters = pipeline.counters
        assert (counters.lost, counters.store_errors) == (0, 0)
    rows = read(tmp_path / "store.sqlite3", "SELECT sql FROM events WHERE kind = 'query'")
    texts = [r["sql"] for r in rows]
    assert sum(t.startswith("INSERT") for t in texts) == 600
    assert "SELECT 'caf\\xff'" in texts  # the bytes it stood for, written out


def test_every_text_field_is_made_storable_and_a_hopeless_row_goes_alone(tmp_path: Path):
    writer = store.Writer(tmp_path / "store.sqlite3")
    now = time.time()
    rows = [events.row(kind="query", ts=now + i, sql=f"SELECT {i}") for i in range(50)]
    rows[3].update(thread="worker-\udcfe", context="request:GET /\ud800", call_site="x\udcff.py:1")
    rows[7]["rows"] = 2**70  # no SQLite integer holds it: dropped alone
    holds = [
        store.Hold("k1", "/db", 1, 1, "T\udcff", "ctx", None, "INSERT", now),
        store.Hold("k2", "/db", 1, 2, "T", "ctx", None, "INSERT", now),
    ]
    written = writer.write(rows, holds, [])
    assert written == store.Written(events=49, holds=2, refused=0, dropped=1)
    assert rows[7]["id"] is None and all(r["id"] for i, r in enumerate(rows) if i != 7)
    stored = [r[0] for r in writer.conn.execute("SELECT id FROM events ORDER BY id")]
    assert stored == [r["id"] for r in rows if r["id"] is not None]  # each once
    got = dict(
        writer.conn.execute(
            "SELECT thread, context FROM events WHERE id = ?", (rows[3]["id"],)
        ).fetchone()
    )
    assert got == {"thread": "worker-\\xfe", "context": "request:GET /\\ud800"}
    threads = {r[0] for r in writer.conn.execute("SELECT thread FROM holds")}
    assert threads == {"T\\xff", "T"}
    # A hold whose key is already stored is refused, and said so.
    again = writer.write(
        [], [holds[1], store.Hold("k3", "/db", 1, 3, "T", "c", None, "I", now)], []
    )
    assert again == store.Written(events=0, holds=1, refused=1, dropped=0)


def test_a_refused_hold_is_counted_as_lost(tmp_path: Path, watched):
    with fresh_pipeline(tmp_path / "store.sqlite3"):
        db = watched()
        with transaction.atomic(using=db):
            Item.objects.using(db).create(name="first")
        pipeline.flush()
        flusher = pipeline.current_flusher()
        assert pipeline.counters.lost == 0
        # The next transaction's hold key, already taken in the store (as a reused pid
        # made one before each process's start was part of the key).
        o = connections[db]._lockwatch.origin
        (last,) = read(
            flusher.cfg.store,
            "SELECT key FROM holds WHERE pid = ? AND conn_id = ? ORDER BY lock_ts DESC LIMIT 1",
            (o.pid, o.conn_id),
        )[0]
        pid, conn_id, seq, rest = re.fullmatch(r"(\d+):(\d+):(\d+)(.*)", last).groups()
        taken = f"{pid}:{conn_id}:{int(seq) + 1}{rest}"
        conn = sqlite3.connect(flusher.cfg.store)
        conn.execute(
            "INSERT INTO holds (key, db, pid, conn_id, lock_ts) VALUES (?, 'x', 1, 1, 1.0)",
            (taken,),
        )
        conn.commit()
        conn.close()
        with transaction.atomic(using=db):
            Item.objects.using(db).create(name="second")
        pipeline.flush()
        assert pipeline.counters.lost == 1


def test_a_script_whose_path_is_not_utf8_is_stored(tmp_path: Path):
    """argv bytes that are not UTF-8: its events, and its processes row, are stored."""
    env = project_env(tmp_path / "app.sqlite3", tmp_path / "store.sqlite3")
    script = os.path.join(os.fsencode(tmp_path), b"batch\xff.py")
    with open(script, "w") as f:
        f.write(
            "import django, os\n"
            "os.environ['DJANGO_SETTINGS_MODULE'] = 'tests.project.settings'\n"
            "django.setup()\n"
            "from django.db import transaction\n"
            "from tests.project.shop.models import Item\n"
            "for i in range(300):\n"
            "    with transaction.atomic():\n"
            "        Item.objects.create(name=str(i))\n"
        )
    subprocess.run([sys.executable, script], env=env, check=True, timeout=120)
    path = tmp_path / "store.sqlite3"
    label = "program:batch\\xff.py"  # the byte, written out
    txns = read(path, "SELECT count(*) FROM events WHERE kind = 'transaction' AND context = ?",
                (label,))[0][0]  # fmt: skip
    assert txns == 300
    (proc,) = read(path, "SELECT * FROM processes WHERE program LIKE 'program:batch%'")
    assert proc["program"] == label
    assert (proc["lost"], proc["ended"]) == (0, "exit") and proc["stored"] >= 600


# -- retention under load ---------------------------------------------------------------


def _flood(seconds: float, db: str) -> int:
    """Offer raw records as fast as this thread can (the pipeline takes what it can)."""
    from tests.support.records import Unit

    unit = Unit(db)
    emit = pipeline.emit
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for rec in unit.records():
            emit(rec)
        sent += 1
        if sent % 50 == 0:
            time.sleep(0.0005)  # let the flusher run, as an app's requests would
    return sent


class Sampler(threading.Thread):
    """Reads the store every 20 ms while it is written: what a reader could see."""

    def __init__(self, path: Path, sql: str) -> None:
        super().__init__(daemon=True)
        self.path, self.sql = path, sql
        self.seen: list[tuple] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            if self.path.exists():
                with contextlib.suppress(sqlite3.Error):
                    self.seen.append(tuple(read(self.path, self.sql)[0]))
            time.sleep(0.02)


def test_retention_by_rows_holds_under_load(tmp_path: Path):
    path = tmp_path / "store.sqlite3"
    limit = 1000
    sampler = Sampler(path, "SELECT count(*), (SELECT count(*) FROM holds) FROM events")
    with fresh_pipeline(path, RETENTION_MAX_ROWS=limit, FLUSH_INTERVAL=0.1):
        sampler.start()
        _flood(3.0, str(tmp_path / "app.sqlite3"))
        pipeline.flush(60)
        sampler.done.set()
        sampler.join()
    assert read(path, "SELECT max(id) FROM events")[0][0] > 20 * limit  # really under load
    events_seen = [n for n, _ in sampler.seen]
    assert len(events_seen) > 20
    # At most one write batch (5% of the limit, at least 500 rows) over the limit, and
    # only until that batch's prune a moment later; none over once writing stops.
    assert max(events_seen) <= limit + 500
    (count, holds_kept) = read(path, "SELECT count(*), (SELECT count(*) FROM holds) FROM events")[0]
    assert limit * 0.9 <= count <= limit
    # Holds go with the events they belong to: one per ten records here.
    assert holds_kept <= count


def test_retention_by_age_holds_under_load(tmp_path: Path, monkeypatch):
    """Each prune deletes every row past the age limit that was there when it began,
    or as many as it may (twice what was just written, plus a slack, so a backlog
    shrinks); when the load stops, no row past the limit is left."""
    path = tmp_path / "store.sqlite3"
    # Each prune: (when it began, rows it removed, rows it could, aged rows it left).
    prunes: list[tuple[float, int, int, int]] = []
    real_prune = store.Writer.prune

    def checked_prune(self, max_age, max_rows, batch=5000):
        started = time.time()
        (last,) = self.conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
        removed = real_prune(self, max_age, max_rows, batch)
        (left,) = self.conn.execute(
            "SELECT count(*) FROM events WHERE id <= ? AND ts < ?", (last, started - max_age)
        ).fetchone()
        prunes.append((started, removed, batch, left))
        return removed

    monkeypatch.setattr(store.Writer, "prune", checked_prune)
    with fresh_pipeline(path, RETENTION_MAX_AGE=1, FLUSH_INTERVAL=0.1):
        _flood(3.5, str(tmp_path / "app.sqlite3"))
        pipeline.flush(60)
        # Idle, the flusher still prunes once a second, what is left of a backlog too.
        stopped = time.time()
        deadline = time.monotonic() + 30
        while not any(p[0] > stopped and p[3] == 0 for p in prunes):
            assert time.monotonic() < deadline, prunes[-3:]
            time.sleep(0.05)
        last_started = max(p[0] for p in prunes if p[3] == 0)
        (oldest,) = read(path, "SELECT min(ts) FROM events")[0]
    assert sum(p[1] for p in prunes) > 20_000  # the age limit really cut, under load
    for started, removed, allowed, left in prunes:
        assert left == 0 or removed >= allowed, (started, removed, allowed, left)
    assert oldest is None or oldest >= last_started - 1.0


# -- a process killed before its flush -----------------------------------------------------

KILLED = """
import os, signal, sys, time
import django
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.project.settings"
django.setup()
from lockwatch import pipeline
from tests.support.records import Unit
unit = Unit(sys.argv[1])
end, n = time.monotonic() + 1.5, 0
while time.monotonic() < end:
    for rec in unit.records():
        pipeline.emit(rec)
    n += 1
    if n % 50 == 0:
        time.sleep(0.0005)  # as an app's requests would, so the flusher runs
buf = pipeline.current_buffer()
print(buf.accepted, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_process_is_found_and_what_it_lost_is_counted(
    tmp_path: Path, watched, caplog, monkeypatch
):
    path = tmp_path / "store.sqlite3"
    env = project_env(tmp_path / "app.sqlite3", path, migrate=False, LW_FLUSH="0.1")
    child = subprocess.run(
        [sys.executable, "-c", KILLED, str(tmp_path / "app.sqlite3")], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr
    accepted = int(child.stdout)
    (before,) = read(path, "SELECT * FROM processes")
    assert before["ended"] is None
    truly_lost = accepted - before["stored"] - before["lost"]
    assert truly_lost > 0  # it was killed with records in its buffer

    # The next process to start finds it (once its last report is STALE old).
    monkeypatch.setattr(Flusher, "STALE", 0.2)
    time.sleep(0.3)
    with caplog.at_level(logging.WARNING, "lockwatch"), fresh_pipeline(path):
        Item.objects.using(watched()).create(name="next")
        pipeline.flush()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            (after,) = read(path, "SELECT * FROM processes WHERE pid = ?", (before["pid"],))
            if after["ended"]:
                break
            time.sleep(0.05)
    assert after["ended"] == "killed"
    # A lower bound, never more than it really lost: what its last row says it held.
    assert 0 < after["unflushed"] <= truly_lost
    assert after["unflushed"] == before["accepted"] - before["stored"] - before["lost"]
    assert after["lost"] == before["lost"] + after["unflushed"]
    assert f"process {before['pid']} " in caplog.text and "never stored" in caplog.text


# -- a damaged store -------------------------------------------------------------------------


def test_a_store_overwritten_while_in_use_is_detected_and_counted(tmp_path: Path, watched, caplog):
    path = tmp_path / "store.sqlite3"
    with caplog.at_level(logging.ERROR, "lockwatch"), fresh_pipeline(path):
        db = watched()
        for i in range(20):
            Item.objects.using(db).create(name=f"i{i}")
        pipeline.flush()
        writer = pipeline.current_flusher()._writer
        writer.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the file has it all
        with open(path, "r+b") as f:  # dd if=/dev/urandom of=store conv=notrunc
            f.write(os.urandom(64 * 1024))
        time.sleep(0.2)  # a housekeeping cycle or more
        for i in range(10):
            Item.objects.using(db).create(name=f"j{i}")
        pipeline.flush()
        time.sleep(0.1)
        counters = pipeline.counters
        assert counters.store_errors >= 1
        assert counters.lost >= 10
        assert "is damaged" in caplog.text and str(path) in caplog.text
        # It stays stopped: nothing more goes into the damaged file.
        files = [path, Path(f"{path}-wal")]

        def state() -> list[tuple[int, int] | None]:
            return [(p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else None for p in files]

        before, lost = state(), counters.lost
        for i in range(10):
            Item.objects.using(db).create(name=f"k{i}")
        pipeline.flush()
        time.sleep(0.1)
        assert state() == before
        assert counters.lost >= lost + 10
        # Moved aside, a new store is made and events flow again.
        path.rename(tmp_path / "damaged.sqlite3")
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        Item.objects.using(db).create(name="fresh")
        pipeline.flush()
    assert read(path, "SELECT count(*) FROM events WHERE sql LIKE 'INSERT%'")[0][0] >= 1


def test_a_store_damaged_before_the_start_is_left_alone_and_counted(
    tmp_path: Path, watched, caplog
):
    path = tmp_path / "store.sqlite3"
    garbage = b"not a database " * 4096
    path.write_bytes(garbage)
    with caplog.at_level(logging.WARNING, "lockwatch"), fresh_pipeline(path):
        db = watched()
        for batch in range(3):
            for i in range(5):
                Item.objects.using(db).create(name=f"{batch}.{i}")
            pipeline.flush()
        assert pipeline.counters.lost >= 15
        assert pipeline.counters.store_errors >= 3
    assert path.read_bytes() == garbage
    said = [r for r in caplog.records if "lockwatch" in r.getMessage()]
    assert len(said) == 1 and "is damaged" in said[0].getMessage(), caplog.text


# -- the store's files are private -----------------------------------------------------------


def test_an_existing_store_and_its_companions_become_private(tmp_path: Path, watched):
    path = tmp_path / "store.sqlite3"
    companions = [path, Path(f"{path}-wal"), Path(f"{path}-shm"), holders.path_for(path)]
    # A touched store (0644), and a valid one's -wal and -shm left 0644 by an older run.
    seed = sqlite3.connect(path)
    seed.execute("PRAGMA journal_mode=WAL")
    seed.execute("CREATE TABLE seed (x)")
    keep_open = sqlite3.connect(path)  # so closing the first keeps -wal and -shm
    keep_open.execute("SELECT * FROM seed").fetchall()
    seed.close()
    holders.path_for(path).touch()
    for p in companions:
        os.chmod(p, 0o644)
    try:
        with fresh_pipeline(path):
            db = watched()
            Item.objects.using(db).create(name="x")
            pipeline.flush()
            assert pipeline.counters.lost == 0
    finally:
        keep_open.close()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in companions if p.exists()}
    assert set(modes) >= {path.name, f"{path.name}-holders"}
    assert set(modes.values()) == {0o600}, modes


def test_a_new_store_and_its_holder_table_are_private(tmp_path: Path, watched):
    path = tmp_path / "new" / "store.sqlite3"
    with fresh_pipeline(path):
        db = watched()
        with transaction.atomic(using=db):
            Item.objects.using(db).create(name="x")
        pipeline.flush()
    made = [p for p in path.parent.iterdir()]
    assert {p.name for p in made} >= {"store.sqlite3", "store.sqlite3-holders"}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in made} == dict.fromkeys(
        (p.name for p in made), 0o600
    )


def test_what_is_inferred_of_a_silent_process(tmp_path: Path):
    """Only a process that is dead and silent is marked; one that reports again was not."""
    writer = store.Writer(tmp_path / "store.sqlite3")
    figures = dict.fromkeys(
        ("accepted", "dropped", "capture_errors", "store_errors", "lost", "live_errors",
         "live_missed", "stored"), 0
    )  # fmt: skip
    me, now = os.getpid(), time.time()
    gone = max(p for p in range(me + 1, me + 1000) if not _alive_pid(p))
    held = {**figures, "accepted": 50, "stored": 30, "lost": 5}
    writer.report(gone, 1.0, "program:gone", "exact", held)
    writer.report(me, 2.0, "program:me-before", "exact", held)  # this pid, an earlier process
    writer.report(me, 3.0, "program:me", "exact", held)  # this very process
    writer.report(gone, 4.0, "program:clean", "exact", held, ended=True)
    own = (me, 3.0)
    assert writer.reap_unflushed(_alive_pid, now, own) == []  # none silent for 10 s yet
    found = writer.reap_unflushed(_alive_pid, now + 60, own)
    assert sorted(found) == sorted([(gone, "program:gone", 15), (me, "program:me-before", 15)])
    assert writer.reap_unflushed(_alive_pid, now + 120, own) == []  # once only
    rows = {r["program"]: dict(r) for r in writer.conn.execute("SELECT * FROM processes")}
    assert (rows["program:gone"]["ended"], rows["program:gone"]["lost"]) == ("killed", 20)
    assert rows["program:me"]["ended"] is None and rows["program:clean"]["ended"] == "exit"
    # It was only silent (another pid namespace, a long stall): its own figures stand.
    writer.report(gone, 1.0, "program:gone", "exact", held)
    row = writer.conn.execute("SELECT * FROM processes WHERE started = 1.0").fetchone()
    assert (row["ended"], row["unflushed"], row["lost"]) == (None, None, 5)


def _alive_pid(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def test_the_damage_check_keeps_the_writers_locks(tmp_path: Path):
    """The flusher looks at the store's header each second. Opening and closing the file
    for it would drop every POSIX lock the process holds on the file, SQLite's shared
    lock too: another process that then closed the store would take itself for the last
    connection and delete the WAL under ours (seen as `disk I/O error`, events lost)."""
    path = tmp_path / "store.sqlite3"
    writer = store.Writer(path)
    writer.write([events.row(kind="query", ts=time.time(), sql="SELECT 1")], [], [])
    assert writer.damage() is None
    # Another process opens the store, reads, and closes it: not the last connection.
    subprocess.run(
        [sys.executable, "-c",
         "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
         " c.execute('SELECT count(*) FROM events').fetchone(); c.close()", str(path)],
        check=True,
    )  # fmt: skip
    assert Path(f"{path}-wal").exists() and Path(f"{path}-shm").exists()
    writer.write([events.row(kind="query", ts=time.time(), sql="SELECT 2")], [], [])
    reader = sqlite3.connect(path)
    try:
        assert reader.execute("SELECT count(*) FROM events").fetchone() == (2,)
    finally:
        reader.close()
        writer.close()
