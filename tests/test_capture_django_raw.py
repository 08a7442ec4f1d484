"""Django's raw sqlite3 connection (``connection.connection``), used directly.

The usual fix for "pandas locks my test" hands pandas Django's own connection:
``df.to_sql(con=connection.connection)``. What runs on it is captured by the
connection's probe, and Django's own statements are still recorded once.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import pytest
from django.db import connections, transaction

from tests.conftest import every_statement, line_of, run_threads
from tests.project.shop.models import Item

HERE = Path(__file__)


def site(marker: str, function: str) -> str:
    return f"tests/{HERE.name}:{line_of(HERE, marker)} in {function}"


def test_statements_on_the_raw_connection_are_captured_once(lw, watched):
    every_statement(lw)
    db = watched()
    conn = connections[db]
    Item.objects.using(db).create(name="orm")  # ORM-CREATE
    raw = conn.connection
    cur = raw.cursor()
    cur.execute("INSERT INTO shop_item (name, qty) VALUES ('raw', 1)")  # RAW-CURSOR
    raw.execute("UPDATE shop_item SET qty = 2 WHERE name = 'raw'")  # RAW-EXECUTE
    with transaction.atomic(using=db):  # ATOMIC-LINE
        Item.objects.using(db).filter(name="orm").update(qty=3)  # ORM-UPDATE
    lw.settle()
    queries = lw.events(kind="query")
    by_site: dict[str, int] = {}
    for q in queries:
        by_site[q["call_site"]] = by_site.get(q["call_site"], 0) + 1
    fn = "test_statements_on_the_raw_connection_are_captured_once"
    assert by_site[site("RAW-CURSOR", fn)] == 1
    assert by_site[site("RAW-EXECUTE", fn)] == 1
    assert by_site[site("ORM-CREATE", fn)] == 1  # Django's statement, not twice
    assert by_site[site("ORM-UPDATE", fn)] == 1
    assert all(q["alias"] == db for q in queries)
    # One transaction for the atomic() block, not one from Django and one from sqlite3.
    mine = [t for t in lw.events(kind="transaction") if HERE.name in (t["call_site"] or "")]
    (txn,) = mine
    assert txn["end"] == "commit" and txn["call_site"] == site("ATOMIC-LINE", fn)
    assert txn["lock_call_site"] == site("ORM-UPDATE", fn)


def test_pandas_on_djangos_connection_waits_and_names_the_holder(lw, watched):
    db = watched(timeout=0.3)
    other = f"{db}_holder"  # the same file through a second alias: another connection
    connections.settings[other] = dict(connections.settings[db])
    lw.cleanups.append(lambda: connections.settings.pop(other))
    held, done = threading.Event(), threading.Event()

    def holder() -> None:
        with transaction.atomic(using=other):
            Item.objects.using(other).create(name="held")  # HOLDER-LINE
            held.set()
            done.wait(10)
        connections[other].close()

    def pandas_writer() -> None:
        held.wait(10)
        frame = pd.DataFrame({"name": ["a", "b"], "qty": [1, 2]})
        connections[db].ensure_connection()
        try:
            with pytest.raises(Exception) as raised:
                frame.to_sql(
                    "shop_item", con=connections[db].connection, if_exists="append", index=False
                )  # PANDAS-LINE
            chain = [raised.value, raised.value.__cause__, raised.value.__context__]
            assert any("database is locked" in str(e) for e in chain if e), chain
        finally:
            done.set()
            connections[db].close()

    assert run_threads(holder, pandas_writer) == [None, None]
    lw.settle()
    (busy,) = lw.events(kind="busy")
    assert busy["alias"] == db
    assert busy["classification"] == "timeout"
    assert 300 <= busy["wait_ms"] <= busy["duration_ms"]  # late, never early
    assert busy["call_site"].startswith(f"tests/{HERE.name}:")
    assert busy["call_site"].endswith(" in pandas_writer")
    assert busy["blocker_call_site"] == site("HOLDER-LINE", "holder")
