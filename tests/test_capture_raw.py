"""Connections Django does not own: plain sqlite3.connect and SQLAlchemy."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from django.db import connections, transaction

import lockwatch
from tests.conftest import line_of
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
    assert busy["wait_ms"] == pytest.approx(300, rel=0.15)
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
