"""One answer to "which database is this?", however its name is spelled.

A ``file:`` URI (percent-encoded, with a query), a plain path and a symlink name the
same file: the E004 check, the flusher's refusal to write into a watched database, the
``db`` column and the holder table's key must all see one database.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.core import checks
from django.db import connections, transaction
from django.test import override_settings

import lockwatch
from lockwatch import conf, paths, pipeline
from tests.conftest import line_of, run_threads
from tests.project.shop.models import Item

HERE = Path(__file__)
_aliases = itertools.count(1)


def uri_of(path: Path, query: str = "") -> str:
    return f"file:{quote(str(path))}" + (f"?{query}" if query else "")


def test_names_of_one_file_resolve_alike(tmp_path: Path):
    folder = tmp_path / "my app"  # a space: percent-encoded in the URI
    folder.mkdir()
    real = folder / "db é.sqlite3"
    real.touch()
    (tmp_path / "link.sqlite3").symlink_to(real)
    expected = str(real)
    for name, uri in [
        (str(real), False),
        (real, False),
        (os.fsencode(real), False),
        (str(tmp_path / "my app" / ".." / "my app" / "db é.sqlite3"), False),
        (str(tmp_path / "link.sqlite3"), False),
        (uri_of(real), True),
        (uri_of(real, "mode=rwc&cache=private"), True),
        (uri_of(real, "vfs=unix-dotfile"), True),
        (f"file://localhost{quote(str(real))}?mode=ro#fragment", True),
        (f"file://{quote(str(real))}", True),  # file:///path: an empty authority
        (uri_of(tmp_path / "link.sqlite3", "mode=ro"), True),
    ]:
        assert paths.database(name, uri=uri) == expected, name


def test_a_relative_uri_is_relative_to_the_working_directory(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert paths.database("file:data.sqlite3?mode=rwc", uri=True) == str(tmp_path / "data.sqlite3")


def test_databases_that_are_no_file():
    for name in ("", ":memory:", "file::memory:", "file::memory:?cache=shared", "file:"):
        assert paths.database(name, uri=True) == ":memory:", name
    # A named one is shared by the process's connections: it keeps its name.
    named = "file:memorydb_default?mode=memory&cache=shared"
    assert paths.database(named, uri=True) == ":memory:memorydb_default"
    assert paths.database("file:/shared?vfs=memdb", uri=True) == ":memory:/shared"
    assert paths.database("file:x?mode=%6Demory", uri=True) == ":memory:x"  # decoded


def test_a_file_name_that_only_looks_like_a_uri(tmp_path: Path, monkeypatch):
    """Without uri=True, and a SQLite built without SQLITE_USE_URI, 'file:x' is a file
    of that name; with either, a URI. Checked against what SQLite itself opens."""
    monkeypatch.chdir(tmp_path)
    conn = sqlite3.connect("file:odd.sqlite3")
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    opened = {p.name for p in tmp_path.iterdir()}
    assert paths.database("file:odd.sqlite3") == str(tmp_path / opened.pop())


def test_the_store_named_by_a_file_uri_is_refused_by_the_check(tmp_path: Path, monkeypatch):
    app = tmp_path / "my app.sqlite3"
    monkeypatch.setitem(
        settings.DATABASES,
        "by_uri",
        {
            "ENGINE": "lockwatch.db.backends.sqlite3",
            "NAME": uri_of(app, "mode=rwc"),
            "OPTIONS": {"uri": True},
        },
    )
    with override_settings(LOCKWATCH={"STORE": str(app)}):
        conf.reset()
        found = [m for m in checks.run_checks(tags=["lockwatch"]) if m.id == "lockwatch.E004"]
    conf.reset()
    assert len(found) == 1 and "'by_uri'" in found[0].msg


def _alias(name: str, **options) -> str:
    alias = f"p{next(_aliases)}"
    cfg = connections.configure_settings(
        {
            "default": connections.settings["default"],
            alias: {"ENGINE": "lockwatch.db.backends.sqlite3", "NAME": name, "OPTIONS": options},
        }
    )
    connections.settings[alias] = cfg[alias]
    return alias


@pytest.fixture
def uri_alias():
    made: list[str] = []

    def make(name: str, **options) -> str:
        made.append(_alias(name, **options))
        return made[-1]

    yield make
    for alias in made:
        connections[alias].close()
        del connections.settings[alias]


def test_events_name_the_file_not_the_uri(lw, watched, uri_alias):
    plain = watched()
    path = Path(connections[plain].settings_dict["NAME"])
    by_uri = uri_alias(uri_of(path, "mode=rw"))
    Item.objects.using(by_uri).create(name="through the uri")
    lockwatch.instrument_sqlite3()
    try:
        raw = sqlite3.connect(uri_of(path, "cache=private"), uri=True)
        raw.execute("INSERT INTO shop_item (name, qty) VALUES ('raw', 1)")
        raw.commit()
        raw.close()
    finally:
        lockwatch.uninstrument_sqlite3()
    writes = lw.rows(
        "SELECT alias, db FROM events WHERE sql LIKE 'INSERT%' OR lock_sql LIKE 'INSERT%'"
    )
    assert {w["alias"] for w in writes} == {by_uri, "sqlite3"}
    assert {w["db"] for w in writes} == {str(path)}


def test_a_wait_through_a_uri_alias_names_the_holder_on_the_same_file(lw, watched, uri_alias):
    plain = watched()
    path = Path(connections[plain].settings_dict["NAME"])
    by_uri = uri_alias(uri_of(path, "mode=rw"), timeout=5)
    locked = threading.Event()

    def holder() -> None:
        with transaction.atomic(using=plain):
            Item.objects.using(plain).create(name="held")  # HOLDS-PLAIN
            locked.set()
            time.sleep(0.4)

    def writer() -> None:
        locked.wait(5)
        Item.objects.using(by_uri).create(name="waits")

    assert run_threads(holder, writer) == [None, None]
    lw.settle()
    (wait,) = lw.events(kind="wait")
    assert wait["alias"] == by_uri
    where = f"tests/{HERE.name}:{line_of(HERE, 'HOLDS-PLAIN')} in holder"
    assert wait["blocker_call_site"] == where, wait["blocker_split"]


def test_the_store_reached_through_a_uri_alias_is_never_written(tmp_path: Path, uri_alias):
    app = tmp_path / "app db.sqlite3"
    raw = sqlite3.connect(app)
    raw.execute("CREATE TABLE shop_item (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)")
    raw.close()
    pipeline.shutdown()
    pipeline.reset()
    try:
        with override_settings(LOCKWATCH={"STORE": str(app), "FLUSH_INTERVAL": 0.01}):
            conf.reset()
            by_uri = uri_alias(uri_of(app, "mode=rw"))
            for i in range(3):
                Item.objects.using(by_uri).create(name=f"i{i}")
            pipeline.flush()
            assert pipeline.counters.lost >= 3
    finally:
        pipeline.shutdown()
        pipeline.reset()
        conf.reset()
    check = sqlite3.connect(app)
    tables = {r[0] for r in check.execute("SELECT name FROM sqlite_master")}
    journal = check.execute("PRAGMA journal_mode").fetchone()[0]
    check.close()
    assert tables == {"shop_item"}
    assert journal == "delete"  # never switched to WAL
