"""lockwatch must never change what the app sees, nor block it."""

from __future__ import annotations

import time

import pytest
from django.db import IntegrityError, OperationalError, connections
from django.test import override_settings

from lockwatch import conf, pipeline
from tests.project.shop.models import Item
from tests.scenarios import commit_behind_reader, hold_then_write

PLAIN = "django.db.backends.sqlite3"
WATCHED = "lockwatch.db.backends.sqlite3"


def _failure(db: str, action) -> BaseException:
    try:
        action(db)
    except BaseException as exc:  # noqa: BLE001
        return exc
    raise AssertionError("expected a failure")


def _no_table(db: str) -> None:
    with connections[db].cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table WHERE id = %s", [1])


def _duplicate(db: str) -> None:
    with connections[db].cursor() as cursor:
        cursor.execute("CREATE UNIQUE INDEX IF NOT EXISTS item_name ON shop_item (name)")
    Item.objects.using(db).create(name="dup")
    Item.objects.using(db).create(name="dup")


def _syntax(db: str) -> None:
    with connections[db].cursor() as cursor:
        cursor.execute("SELEC 1")


def _locked(db: str) -> None:
    errors = hold_then_write(db, 0.4)
    assert errors[0] is None
    raise errors[1]


def _commit_busy(db: str) -> None:
    """A COMMIT that times out waiting for a reader."""
    errors = commit_behind_reader(db, 0.5)
    assert errors[0] is None
    raise errors[1]


@pytest.mark.parametrize("action", [_no_table, _duplicate, _syntax, _locked, _commit_busy])
def test_errors_are_identical_to_the_plain_backend(lw, watched, action):
    plain = _failure(watched(engine=PLAIN, timeout=0.2), action)
    seen = _failure(watched(engine=WATCHED, timeout=0.2), action)
    assert type(seen) is type(plain)
    assert str(seen) == str(plain)
    assert type(seen.__cause__) is type(plain.__cause__)
    assert str(seen.__cause__) == str(plain.__cause__)
    for attr in ("sqlite_errorcode", "sqlite_errorname"):
        assert getattr(seen.__cause__, attr, None) == getattr(plain.__cause__, attr, None)
    assert isinstance(seen, OperationalError | IntegrityError)


def test_full_buffer_drops_and_counts_without_blocking(tmp_path, watched):
    pipeline.shutdown()
    pipeline.reset()
    store = tmp_path / "store.sqlite3"
    with override_settings(
        LOCKWATCH={
            "STORE": str(store),
            "BUFFER_SIZE": 10,
            "FLUSH_INTERVAL": 60,
            "CAPTURE_QUERIES": "all",
        }
    ):
        conf.reset()
        try:
            db = watched()
            started = time.perf_counter()
            for i in range(200):
                Item.objects.using(db).filter(pk=i).exists()
            elapsed = time.perf_counter() - started
            buf = pipeline.current_buffer()
            assert buf.accepted == 10
            assert buf.dropped >= 190
            assert elapsed < 5  # would hang for minutes if capture waited on the flusher
            pipeline.flush()
        finally:
            pipeline.shutdown()
            pipeline.reset()
    conf.reset()


def test_store_failure_is_counted_not_raised(tmp_path, watched):
    pipeline.shutdown()
    pipeline.reset()
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the store's folder should be")
    with override_settings(
        LOCKWATCH={"STORE": str(blocked / "store.sqlite3"), "FLUSH_INTERVAL": 0.01}
    ):
        conf.reset()
        try:
            db = watched()
            for i in range(5):
                Item.objects.using(db).create(name=str(i))
            pipeline.flush()
            assert pipeline.counters.store_errors >= 1
            assert pipeline.counters.lost >= 5
            assert Item.objects.using(db).count() == 5
        finally:
            pipeline.shutdown()
            pipeline.reset()
    conf.reset()


def test_params_are_not_stored_by_default(lw, watched):
    db = watched()
    Item.objects.using(db).create(name="s3cr3t-value-42")
    lw.flush()
    pipeline.shutdown()
    data = b"".join(p.read_bytes() for p in lw.store.parent.glob("lockwatch.sqlite3*"))
    assert b"INSERT INTO" in data  # the SQL is there...
    assert b"s3cr3t-value-42" not in data  # ...its values are not


def test_params_stored_when_opted_in(lw, watched):
    with override_settings(
        LOCKWATCH={"STORE": str(lw.store), "CAPTURE_PARAMS": True, "CAPTURE_QUERIES": "all"}
    ):
        conf.reset()
        pipeline.shutdown()
        pipeline.reset()
        db = watched()
        Item.objects.using(db).create(name="visible-value")
        with connections[db].cursor() as cursor:
            cursor.execute("SELECT %s, %s", [b"\xff\xfe\x00binary", "caf\u00e9 \U0001f512"])
        (insert,) = [e for e in lw.events(kind="query") if e["stmt_class"] == "write"]
        assert "visible-value" in insert["params"]
        (binary,) = [e for e in lw.events(kind="query") if e["sql"] == "SELECT %s, %s"]
        assert "\\xff\\xfe\\x00binary" in binary["params"]
        assert "caf\u00e9 \U0001f512" in binary["params"]


def test_nothing_is_written_into_the_watched_database(lw, watched, tmp_path):
    db = watched()
    path = connections[db].settings_dict["NAME"]
    Item.objects.using(db).create(name="x")
    lw.flush()
    import sqlite3

    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert tables == {"shop_item", "sqlite_sequence"}  # what Django itself made
    assert lw.store.exists() and str(lw.store) != path
    assert (lw.store.stat().st_mode & 0o777) == 0o600
