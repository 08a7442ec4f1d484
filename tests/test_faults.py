"""Faults in lockwatch's own machinery: the app keeps working, losses are counted."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from lockwatch import pipeline
from tests.conftest import ROOT, every_statement
from tests.project.shop.models import Item
from tests.support.pipeline import fresh_pipeline
from tests.support.servers import project_env

MANAGE = ROOT / "tests" / "project" / "manage.py"


def _writes(db: str, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        Item.objects.using(db).create(name=f"i{i}")


def test_worker_killed_while_holding_the_lock(lw, tmp_path: Path):
    db = tmp_path / "app.sqlite3"
    env = project_env(db, lw.store)
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [sys.executable, str(MANAGE), "hold_lock", "--seconds", "60", "--ready-file", str(ready)],
        cwd=ROOT, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while not ready.exists():
        assert holder.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.3)  # its flusher records the hold
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)

    # The next process gets the lock (SQLite released it) and reaps the hold.
    done = subprocess.run(
        [sys.executable, str(MANAGE), "write_one"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip
    assert done.stdout.strip() == "ok", done.stderr
    (abandoned,) = lw.events(kind="transaction", end="abandoned")
    assert abandoned["pid"] == holder.pid
    assert abandoned["context"] == "command:hold_lock"
    assert abandoned["lock_call_site"].startswith(
        "tests/project/shop/management/commands/hold_lock.py:"
    )
    assert abandoned["hold_ms"] >= 300
    conn = sqlite3.connect(lw.store)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM holds WHERE end_ts IS NULL").fetchone()[0] == 0
    writes = lw.rows("SELECT * FROM events WHERE kind = 'query' AND sql LIKE 'INSERT%'")
    assert "command:write_one" in {w["context"] for w in writes}  # later events still flow


def test_store_deleted_while_running(tmp_path: Path, watched):
    store = tmp_path / "store.sqlite3"
    with fresh_pipeline(store):
        db = watched()
        _writes(db, 5)
        pipeline.flush()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{store}{suffix}").unlink(missing_ok=True)
        _writes(db, 5, 5)
        pipeline.flush()
        assert Item.objects.using(db).count() == 10
        assert store.exists()
        names = {r[0] for r in sqlite3.connect(store).execute("SELECT sql FROM events")}
        assert any("INSERT" in (n or "") for n in names)
        assert pipeline.counters.lost == 0


def test_unwritable_store_recovers_and_counts(tmp_path: Path, watched):
    folder = tmp_path / "store-dir"
    folder.write_text("a file where the store's folder should be")
    store = folder / "store.sqlite3"
    with fresh_pipeline(store):
        db = watched()
        _writes(db, 5)
        pipeline.flush()
        lost = pipeline.counters.lost
        assert lost >= 5
        folder.unlink()
        folder.mkdir()
        _writes(db, 5, 5)
        pipeline.flush()
        assert Item.objects.using(db).count() == 10
        conn = sqlite3.connect(store)
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] >= 5
        time.sleep(1.1)  # the counters are reported once a second
        _writes(db, 1, 10)
        pipeline.flush()
        (reported,) = conn.execute("SELECT lost FROM processes").fetchone()
        assert reported == pipeline.counters.lost >= lost


def test_full_store_disk(tmp_path: Path, watched):
    store = tmp_path / "store.sqlite3"
    with fresh_pipeline(store):
        db = watched()
        _writes(db, 1)
        pipeline.flush()
        writer = pipeline.current_flusher()._store()
        pages = writer.conn.execute("PRAGMA page_count").fetchone()[0]
        writer.conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is now full
        _writes(db, 300, 1)
        pipeline.flush()
        assert Item.objects.using(db).count() == 301
        assert pipeline.counters.store_errors >= 1
        assert pipeline.counters.lost > 0
        # The writer was dropped and reopened without the limit: events flow again.
        _writes(db, 3, 301)
        pipeline.flush()
        count = sqlite3.connect(store).execute(
            "SELECT count(*) FROM events WHERE sql LIKE 'INSERT%'"
        )
        assert count.fetchone()[0] >= 4


def test_oversized_sql_is_truncated(lw, watched):
    every_statement(lw)
    db = watched()
    from django.db import connections

    huge = "SELECT 1 /* " + "x" * 1_000_000 + " */"
    with connections[db].cursor() as cursor:
        cursor.execute(huge)
    (row,) = [e for e in lw.events(kind="query") if e["sql"].startswith("SELECT 1 /*")]
    assert len(row["sql"]) < 5000
    assert row["sql"].endswith("chars]")
    assert lw.store.stat().st_size < 500_000


def test_never_writes_into_a_watched_database(tmp_path: Path, watched):
    db = watched()
    from django.db import connections

    path = Path(connections[db].settings_dict["NAME"])
    with fresh_pipeline(path):
        _writes(db, 3)
        pipeline.flush()
        assert pipeline.counters.lost >= 3
        tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
        assert "events" not in tables


def test_retention_by_rows_and_age(tmp_path: Path):
    from lockwatch import events, store

    path = tmp_path / "store.sqlite3"
    writer = store.Writer(path)
    now = time.time()
    rows = [events.row(kind="query", ts=now - 3600 + i, sql="SELECT 1") for i in range(100)]
    writer.write(rows, [], [])
    assert writer.prune(max_age=None, max_rows=60, batch=1000) == 40
    assert writer.prune(max_age=3600 - 79.5, max_rows=None, batch=1000) == 40
    ts = [r[0] for r in writer.conn.execute("SELECT ts FROM events ORDER BY id")]
    assert len(ts) == 20 and min(ts) >= now - 3600 + 80
    # Small batches: each call deletes at most `batch` rows, so no long write lock.
    writer.write(rows, [], [])
    assert writer.prune(max_age=None, max_rows=10, batch=25) == 25


def test_an_older_store_is_migrated(tmp_path: Path):
    from lockwatch import store

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    for stmt in store.MIGRATIONS[1]:
        conn.execute(stmt)
    conn.execute("CREATE INDEX events_kind_ts ON events (kind, ts)")
    conn.execute("INSERT INTO events (ts, kind) VALUES (1.0, 'query')")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    migrated = store.connect(path)
    assert migrated.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    indexes = {r[0] for r in migrated.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "events_kind_ts_cover" in indexes and "events_kind_ts" not in indexes
    assert migrated.execute("SELECT count(*) FROM events").fetchone()[0] == 1
