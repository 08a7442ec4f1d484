"""Connections Django does not own: plain sqlite3.connect and SQLAlchemy."""

from __future__ import annotations

import contextlib
import sqlite3
import warnings
from pathlib import Path

import pytest
from django.db import connections, transaction

import lockwatch
from tests.conftest import every_statement, line_of
from tests.project.shop.models import Item

HERE = Path(__file__)


@pytest.fixture
def instrumented():
    lockwatch.instrument_sqlite3()
    yield
    lockwatch.uninstrument_sqlite3()


def site(marker: str, function: str) -> str:
    return f"tests/{HERE.name}:{line_of(HERE, marker)} in {function}"


def test_django_transaction_blocks_raw_sqlite3(lw, watched, instrumented):
    db = watched()
    path = connections[db].settings_dict["NAME"]
    with transaction.atomic(using=db):
        Item.objects.using(db).create(name="held")  # DJANGO-HOLDS
        raw = sqlite3.connect(path, timeout=0.3)
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            raw.execute("INSERT INTO shop_item (name, qty) VALUES ('raw', 1)")  # RAW-WRITE
        raw.close()
    lw.settle()
    (busy,) = lw.events(kind="busy")
    assert busy["alias"] == "sqlite3"
    assert busy["db"] == path
    assert busy["classification"] == "timeout"
    assert 300 <= busy["wait_ms"] <= busy["duration_ms"]  # late, never early
    assert busy["call_site"] == site("RAW-WRITE", "test_django_transaction_blocks_raw_sqlite3")
    assert busy["blocker_call_site"] == site(
        "DJANGO-HOLDS", "test_django_transaction_blocks_raw_sqlite3"
    )


def test_raw_transactions_are_recorded(lw, tmp_path, instrumented):
    path = tmp_path / "raw.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")  # RAW-IMPLICIT-BEGIN
    conn.commit()
    conn.close()
    (txn,) = lw.events(kind="transaction")
    assert txn["end"] == "commit"
    assert txn["lock_call_site"] == site("RAW-IMPLICIT-BEGIN", "test_raw_transactions_are_recorded")
    assert txn["hold_ms"] >= 0


def test_store_connections_are_not_instrumented(lw, tmp_path, instrumented):
    conn = sqlite3.connect(tmp_path / "x.sqlite3")
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    rows = lw.rows()
    assert rows, "the user's statements are captured"
    assert all(r["db"] == str(tmp_path / "x.sqlite3") for r in rows)
    assert not any("events" in (r["sql"] or "") for r in rows)


def test_sqlalchemy_is_captured(lw, watched, instrumented):
    import sqlalchemy

    db = watched()
    path = connections[db].settings_dict["NAME"]
    engine = sqlalchemy.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.3})
    with transaction.atomic(using=db):
        Item.objects.using(db).create(name="held")  # DJANGO-HOLDS-SA
        with pytest.raises(sqlalchemy.exc.OperationalError), engine.begin() as sa:
            sa.execute(sqlalchemy.text("INSERT INTO shop_item (name, qty) VALUES ('sa', 1)"))  # SA
    engine.dispose()
    lw.settle()
    (busy,) = lw.events(kind="busy")
    assert busy["classification"] == "timeout"
    assert busy["call_site"] == site("# SA", "test_sqlalchemy_is_captured")
    assert busy["blocker_call_site"] == site("DJANGO-HOLDS-SA", "test_sqlalchemy_is_captured")


# -- instrumented connections behave as the user's own classes ------------------------


class Journal(sqlite3.Connection):
    """A user's connection class: its own __init__, execute, cursor and commit."""

    def __init__(self, *args, **kwargs):
        self.calls: list[str] = ["init"]
        super().__init__(*args, **kwargs)

    def execute(self, sql, parameters=()):
        self.calls.append(f"execute {sql.split()[0]}")
        return super().execute(sql, parameters)  # JOURNAL-EXECUTE

    def cursor(self, factory=sqlite3.Cursor):
        self.calls.append("cursor")
        return super().cursor(factory)

    def commit(self):
        self.calls.append("commit")
        super().commit()


class Counting(sqlite3.Cursor):
    """A user's cursor class that overrides execute."""

    seen: list[str] = []

    def execute(self, sql, parameters=()):
        Counting.seen.append(sql)
        return super().execute(sql, parameters)


def test_a_users_connection_class_keeps_its_overrides(lw, tmp_path, instrumented):
    path = tmp_path / "journal.sqlite3"
    conn = sqlite3.connect(path, factory=Journal)
    assert isinstance(conn, Journal)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()
    # Exactly the calls the class gets without lockwatch: Connection.execute in C
    # never calls cursor(), so neither does the instrumented one.
    assert conn.calls == ["init", "execute CREATE", "execute INSERT", "commit"]
    (txn,) = lw.events(kind="transaction")
    assert txn["end"] == "commit"
    # The first frame in the user's code is their own execute().
    assert txn["lock_call_site"] == site("JOURNAL-EXECUTE", "execute")


def test_the_factory_given_by_position(lw, tmp_path, instrumented):
    path = tmp_path / "positional.sqlite3"
    with warnings.catch_warnings():  # Python 3.13 deprecates positional arguments
        warnings.simplefilter("ignore", DeprecationWarning)
        conn = sqlite3.connect(path, 5.0, 0, "", True, Journal)
    assert isinstance(conn, Journal) and conn.calls == ["init"]
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    assert [e["db"] for e in lw.events(kind="query")] == [str(path)]


def test_cursor_factories_as_sqlite3_takes_them(lw, tmp_path, instrumented):
    every_statement(lw)
    Counting.seen = []
    conn = sqlite3.connect(tmp_path / "cursors.sqlite3")
    made = [
        conn.cursor(Counting),
        conn.cursor(factory=Counting),
        conn.cursor(lambda c: Counting(c)),  # a factory function
        conn.cursor(factory=lambda c: sqlite3.Cursor(c)),
    ]
    for n, cur in enumerate(made):
        assert cur.execute(f"SELECT {n}").fetchone() == (n,)
    conn.close()
    assert all(isinstance(c, Counting) for c in made[:3])
    assert type(made[3]) is sqlite3.Cursor
    assert Counting.seen == ["SELECT 0", "SELECT 1", "SELECT 2"]
    # The user's cursor classes are captured; a factory function's plain sqlite3.Cursor
    # (whose class cannot take another base) is left as it is.
    assert [e["sql"] for e in lw.events(kind="query")] == ["SELECT 0", "SELECT 1", "SELECT 2"]


@pytest.mark.parametrize("fail", [False, True])
def test_a_with_block_ends_its_transaction(lw, tmp_path, instrumented, fail):
    conn = sqlite3.connect(tmp_path / "with.sqlite3")
    conn.execute("CREATE TABLE t (x)")
    with contextlib.suppress(LookupError), conn:
        conn.execute("INSERT INTO t VALUES (1)")
        if fail:
            raise LookupError("the app's own error")
    # Ended by the with block (in C, not through commit() or rollback()), and seen so:
    # the connection stays open, with nothing left to record at close.
    (txn,) = lw.events(kind="transaction")
    assert txn["end"] == ("rollback" if fail else "commit")
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == (0 if fail else 1)
    conn.close()
