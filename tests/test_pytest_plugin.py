"""The pytest plugin, end to end: a django_db test blocks a second connection."""

from __future__ import annotations

import sqlite3

import pytest

from lockwatch import doctor
from tests.conftest import ROOT

pytest_plugins = ["pytester"]

CLASSIC = """
import sqlite3

import sqlite3

import pytest
import sqlalchemy
from django.db import connection, models


class Thing(models.Model):
    name = models.CharField(max_length=10)

    class Meta:
        app_label = "shop"
        db_table = "plugin_thing"
        managed = False


@pytest.mark.django_db
def test_raw_sqlite3_is_blocked():
    editor = connection.schema_editor()
    editor.deferred_sql = []  # no `with`: inside the test's transaction it would refuse
    editor.create_model(Thing)  # TAKES-THE-LOCK
    raw = sqlite3.connect(connection.settings_dict["NAME"], timeout=0.3)
    raw.execute("INSERT INTO shop_item (name, qty) VALUES ('x', 1)")  # BLOCKED


@pytest.mark.django_db
def test_sqlalchemy_is_blocked():
    editor = connection.schema_editor()
    editor.deferred_sql = []
    editor.create_model(Thing)  # SA-TAKES-THE-LOCK
    engine = sqlalchemy.create_engine(
        "sqlite:///" + connection.settings_dict["NAME"], connect_args={"timeout": 0.3}
    )
    with engine.begin() as sa:
        sa.execute(sqlalchemy.text("INSERT INTO shop_item (name, qty) VALUES ('x', 1)"))


@pytest.mark.django_db
def test_fine():
    editor = connection.schema_editor()
    editor.deferred_sql = []
    editor.create_model(Thing)
"""


@pytest.fixture
def run(pytester, tmp_path):
    pytester.makepyfile(test_classic=CLASSIC)
    env = {
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.project.settings",
        "LOCKWATCH_TEST_DB": str(tmp_path / "app.sqlite3"),
        "LOCKWATCH_TEST_DB_TEST": str(tmp_path / "test-app.sqlite3"),
        "LOCKWATCH_STORE": str(tmp_path / "store.sqlite3"),
    }
    for key, value in env.items():
        pytester._monkeypatch.setenv(key, value)

    def go(*args: str):
        return pytester.runpytest_subprocess("-p", "django", "-p", "no:cacheprovider", *args)

    return go


def _line(marker: str) -> int:
    source = CLASSIC.strip().splitlines()  # as makepyfile writes it
    return next(n for n, text in enumerate(source, 1) if marker in text)


def test_report_names_the_blocker_and_its_line(run):
    result = run("--lockwatch", "--lockwatch-summary")
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()
    assert "lockwatch: database is locked" in out
    assert "classification: timeout (SQLITE_BUSY), waited" in out
    assert f"test_classic.py:{_line('# BLOCKED')} in test_raw_sqlite3_is_blocked" in out
    assert 'took it with: CREATE TABLE "plugin_thing"' in out
    assert f"test_classic.py:{_line('# TAKES-THE-LOCK')} in test_raw_sqlite3_is_blocked" in out
    assert f"test_classic.py:{_line('SA-TAKES-THE-LOCK')} in test_sqlalchemy_is_blocked" in out
    assert "this test, held the write lock for" in out
    # The test's transaction and the second client share a thread: waiting cannot succeed.
    assert "the holder is this same thread, on another connection" in out
    assert "@pytest.mark.django_db(transaction=True)" in out
    assert "lockwatch: longest write-lock holds" in out
    summary = out.split("lockwatch: longest write-lock holds")[1]
    assert "test_classic.py::test_fine" in summary
    assert "setup" not in summary  # pytest-django's database setup is no test
    # Each statement once, on one line, with ? for parameters (never Django's %s).
    assert "waiting statement: INSERT INTO shop_item (name, qty) VALUES ('x', 1)" in out
    assert "%s" not in out.split("lockwatch: database is locked")[1]


def test_sql_is_shown_on_one_line_trimmed_with_natural_placeholders():
    from lockwatch.pytest_plugin import SQL_SHOWN, shown_sql

    django = 'INSERT INTO "shop_item"\n    ("name", "qty")\n  VALUES (%s, %s) -- 100%%'
    assert shown_sql(django) == 'INSERT INTO "shop_item" ("name", "qty") VALUES (?, ?) -- 100%'
    assert shown_sql("SELECT ? FROM t") == "SELECT ? FROM t"
    long = shown_sql("SELECT " + ", ".join(f"c{i}" for i in range(100)) + " FROM t")
    assert len(long) == SQL_SHOWN and long.endswith("…")


def test_off_unless_asked(run):
    result = run()
    result.assert_outcomes(passed=1, failed=2)
    assert "lockwatch: database is locked" not in result.stdout.str()
    assert "database is locked" in result.stdout.str()


SETUP = """
import sqlite3

import pytest

from tests.project.shop.models import Item


@pytest.mark.django_db
def test_first():
    Item.objects.create(name="first")  # FIRST-WRITE


@pytest.mark.django_db
def test_second():
    Item.objects.create(name="second")
"""


def test_database_setup_is_test_setup_not_the_first_test(run, pytester, tmp_path):
    pytester.makepyfile(test_setup_label=SETUP)
    result = run("test_setup_label.py")  # without --lockwatch: labels do not need it
    result.assert_outcomes(passed=2)
    conn = sqlite3.connect(tmp_path / "store.sqlite3")
    try:
        rows = conn.execute(
            "SELECT context, coalesce(lock_sql, sql) FROM events"
            " WHERE kind IN ('transaction', 'query') ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    first = "test:test_setup_label.py::test_first"
    by_context: dict[str, list[str]] = {}
    for context, sql in rows:
        by_context.setdefault(context, []).append(sql or "")
    # pytest-django's test database: its migrations create the tables.
    assert any(s.startswith('CREATE TABLE "shop_item"') for s in by_context.get("test:setup", []))
    assert not [s for s in by_context.get(first, []) if s.startswith("CREATE")]
    # The tests keep their own writes.
    assert any(s.startswith('INSERT INTO "shop_item"') for s in by_context.get(first, []))
    assert "test:test_setup_label.py::test_second" in by_context


def test_the_doctor_names_a_django_db_test_blocked_by_its_own_transaction(run, pytester, tmp_path):
    run("--lockwatch", "test_classic.py::test_raw_sqlite3_is_blocked").assert_outcomes(failed=1)
    found = doctor.findings(sqlite3.connect(tmp_path / "store.sqlite3"))
    first = found[0]
    assert first.code == "test-transaction"
    path = pytester.path / "test_classic.py"  # outside the project root: absolute
    assert first.title.startswith(
        "`test_classic.py::test_raw_sqlite3_is_blocked`: 1 busy error at "
        f"`{path}:{_line('# BLOCKED')} in test_raw_sqlite3_is_blocked`, blocked by "
        f"the test's own transaction, which took the write lock at `{path}:"
        f"{_line('# TAKES-THE-LOCK')} in test"  # the holder table keeps a site's first bytes
    )
    assert "waiting cannot succeed" in first.evidence
    assert "@pytest.mark.django_db(transaction=True)" in first.change
    assert "commit the test's transaction" in first.change
    assert "atomic()" not in first.change  # a test's transaction is not production's


ISOLATION = """
import pandas as pd
import pytest
from django.db import connection

from tests.project.shop.models import Item


@pytest.mark.django_db
def test_commits_the_test_transaction():
    Item.objects.create(name="kept")  # TEST-WRITE
    # The usual fix for a locked-out pandas: hand it Django's connection. It commits.
    pd.DataFrame({"name": ["p"], "qty": [1]}).to_sql(
        "shop_item", con=connection.connection, if_exists="append", index=False
    )


@pytest.mark.django_db
def test_isolated():
    Item.objects.create(name="rolled back")
"""


def test_the_doctor_says_when_a_django_db_test_commits_its_transaction(run, pytester, tmp_path):
    pytester.makepyfile(test_isolation=ISOLATION)
    run("--lockwatch", "test_isolation.py").assert_outcomes(passed=2)
    found = doctor.findings(sqlite3.connect(tmp_path / "store.sqlite3"))
    assert [f.code for f in found] == ["test-isolation"]  # not test_isolated, nor test:setup
    line = next(n for n, t in enumerate(ISOLATION.strip().splitlines(), 1) if "TEST-WRITE" in t)
    assert found[0].title == (
        "`test_isolation.py::test_commits_the_test_transaction`: test isolation was broken: the "
        "test's django_db transaction, which took the write lock at "
        f"`{pytester.path / 'test_isolation.py'}:{line} in test_commits_the_test_transaction`, "
        "was committed"
    )
    assert "pandas' to_sql" in found[0].change


TRACEBACK = """
import sqlite3

import pytest
from django.db import connection

from tests.project.shop.models import Item


@pytest.mark.django_db
def test_raw_blocked():
    Item.objects.create(name="held")
    raw = sqlite3.connect(connection.settings_dict["NAME"], timeout=0.2)
    raw.execute("INSERT INTO shop_item (name, qty) VALUES ('x', 1)")  # RAW-BLOCKED


@pytest.mark.django_db(transaction=True)
def test_django_blocked():
    raw = sqlite3.connect(connection.settings_dict["NAME"])
    raw.execute("BEGIN IMMEDIATE")
    connection.ensure_connection()
    connection.connection.execute("PRAGMA busy_timeout=200")
    try:
        Item.objects.create(name="blocked")  # DJANGO-BLOCKED
    finally:
        raw.rollback()  # the teardown's flush must not be blocked too
"""


def test_a_locked_tests_traceback_ends_in_the_users_code_not_lockwatchs(run, pytester):
    pytester.makepyfile(test_traceback=TRACEBACK)
    result = run("--lockwatch", "--tb=short", "test_traceback.py")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    for name in ("test_raw_blocked", "test_django_blocked"):
        section = out.split(f"_ {name} _", 1)[1].split("lockwatch: database is locked", 1)[0]
        frames = [line for line in section.splitlines() if ": in " in line]
        assert frames, section
        assert not [f for f in frames if "/lockwatch/" in f], frames
    raw = next(n for n, t in enumerate(TRACEBACK.strip().splitlines(), 1) if "RAW-BLOCKED" in t)
    assert f"test_traceback.py:{raw}: in test_raw_blocked" in out
