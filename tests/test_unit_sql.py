import re
import sys
import time
import tracemalloc

import pytest
from django.core.management.color import no_style
from hypothesis import given, settings
from hypothesis import strategies as st

from lockwatch.capture import statements as sql_module
from lockwatch.capture.statements import begin_mode, fingerprint, statement_class


@pytest.mark.parametrize(
    ("sql", "cls"),
    [
        ('SELECT "shop_item"."id" FROM "shop_item"', "read"),
        ("  select 1", "read"),
        ('INSERT INTO "shop_item" ("name") VALUES (%s) RETURNING "id"', "write"),
        ("UPDATE t SET x = 1", "write"),
        ("DELETE FROM t", "write"),
        ("REPLACE INTO t VALUES (1)", "write"),
        ("WITH a AS (SELECT 1) SELECT * FROM a", "read"),
        ("WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a", "write"),
        ('CREATE TABLE "t" ("id" integer)', "ddl"),
        ("ALTER TABLE t ADD COLUMN y", "ddl"),
        ("BEGIN IMMEDIATE", "begin"),
        ('SAVEPOINT "s1_x1"', "begin"),
        ("COMMIT", "commit"),
        ('RELEASE SAVEPOINT "s1_x1"', "commit"),
        ("ROLLBACK", "rollback"),
        ("PRAGMA busy_timeout = 10", "pragma"),
        ("-- hello\nSELECT 1", "read"),
        ("/* c */ DELETE FROM t", "write"),
        ("", "other"),
    ],
)
def test_statement_class(sql, cls):
    assert statement_class(sql) == cls


def test_begin_mode():
    assert begin_mode("BEGIN") == "deferred"
    assert begin_mode("BEGIN IMMEDIATE") == "immediate"
    assert begin_mode("begin exclusive transaction") == "exclusive"
    assert begin_mode("COMMIT") is None


def test_fingerprint_normalizes_literals():
    a = fingerprint("SELECT * FROM t WHERE id = 42 AND name = 'bob''s' AND x IN (1, 2, 3)")
    b = fingerprint("SELECT  *  FROM t WHERE id = 7 AND name = 'al' AND x IN (9)")
    assert a == "SELECT * FROM t WHERE id = ? AND name = ? AND x IN (?)".replace("(?)", "(...)")
    assert b == "SELECT * FROM t WHERE id = ? AND name = ? AND x IN (?)"
    assert fingerprint('SELECT "t2"."c1" FROM "t2"') == 'SELECT "t2"."c1" FROM "t2"'
    assert fingerprint('SAVEPOINT "s140_x12"') == "SAVEPOINT ?"


# -- issue 19: linear-time classification, bounded cache -----------------------------

# The classifier before issue 19, as the reference for ordinary SQL. Its comment
# group backtracks exponentially on runs of comments, so it only sees short ones.
_REFERENCE_FIRST_WORD = re.compile(r"\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*([A-Za-z]+)", re.S)


def _reference_class(sql: str) -> str:
    m = _REFERENCE_FIRST_WORD.match(sql)
    if not m:
        return "other"
    word = m.group(1).upper()
    if word == "WITH":
        body = sql.upper()
        for verb in ("INSERT", "UPDATE", "DELETE", "REPLACE"):
            if re.search(rf"\)\s*{verb}\b", body):
                return "write"
        return "read"
    return sql_module._CLASS_OF_WORD.get(word, "other")


@pytest.mark.parametrize(
    ("sql", "cls"),
    [
        ("/**/" * 200, "other"),
        ("/**/" * 200 + "SELECT 1", "read"),
        ("/* a */ " * 300 + "UPDATE t SET x = 1", "write"),
        ("/*" * 50_000, "other"),  # never closed
        ("/*/" * 2_001 + "*/ DELETE FROM t", "write"),  # pairs close, the last on "*/"
        ("/*/" * 50_000 + "*/ DELETE FROM t", "other"),  # longer than the prefix
        ("--\n" * 2_000 + "INSERT INTO t VALUES (1)", "write"),
        ("-- x" * 50_000, "other"),  # a line comment without its newline
        ("/*" + "*" * 8_000 + "/ BEGIN", "begin"),
        ("/*" + "*" * 200_000 + "/ BEGIN", "other"),
        ("\n\t " * 2_000 + "commit", "commit"),
        ("WITH a AS (" + ") " * 200_000 + "SELECT 1", "read"),
        ("WITH a AS (SELECT 1)" + " " * 200_000 + "DELETE FROM t", "write"),
        ("SELECT" + "x" * 200_000, "other"),
        # Past the bounded prefix the first word is not looked for: "other", which
        # capture treats as a statement that may take the lock.
        (" " * (sql_module._PREFIX + 1) + "SELECT 1", "other"),
    ],
)
def test_adversarial_sql_is_classified_in_linear_time(sql, cls):
    sql_module.CLASSES.clear()
    t0 = time.perf_counter()
    got = statement_class(sql)
    elapsed = time.perf_counter() - t0
    assert got == cls
    assert elapsed < 0.5, f"{elapsed:.2f} s for {len(sql)} characters"


_WORDS = st.sampled_from(
    [*sql_module._CLASS_OF_WORD, "WITH", "with", "Select", "insert", "FROM", "x", "SELECTED"]
)
_COMMENT = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=12).map(
        lambda t: f"--{t}\n"
    ),
    st.text(max_size=12)
    .filter(lambda t: "*/" not in t and not t.endswith("*"))
    .map(lambda t: f"/*{t}*/"),
)
_BLANKS = st.text(alphabet=" \t\r\n\x0b\x0c\u00a0\u2003", max_size=3)


@given(
    lead=st.lists(st.tuples(_BLANKS, _COMMENT), max_size=4),
    blank=_BLANKS,
    word=_WORDS,
    rest=st.text(
        alphabet=st.sampled_from(list(" ()*/-\n'\"abcSELECTINSERTUPDATEDELETEREPLACE1")),
        max_size=40,
    ),
)
@settings(max_examples=400, deadline=None)
def test_ordinary_sql_is_classified_as_before(lead, blank, word, rest):
    sql = "".join(b + c for b, c in lead) + blank + word + rest
    assert sql_module._classify(sql) == _reference_class(sql)


def test_django_statements_are_classified_as_before():
    from django.db import connection

    from tests.project.shop.models import Item

    statements = [
        str(Item.objects.filter(name="x").query),
        str(Item.objects.filter(qty__in=[1, 2, 3]).order_by("-id").values("name").query),
        'INSERT INTO "shop_item" ("name", "qty") VALUES (%s, %s) RETURNING "id"',
        'UPDATE "shop_item" SET "qty" = %s WHERE "id" = %s',
        'DELETE FROM "shop_item" WHERE "id" IN (%s, %s)',
        *connection.ops.sql_flush(no_style(), ["shop_item"]),
        'BEGIN', 'SAVEPOINT "s1_x1"', 'RELEASE SAVEPOINT "s1_x1"', 'ROLLBACK TO SAVEPOINT "s"',
        "PRAGMA foreign_keys = ON", "ANALYZE", "VACUUM", "EXPLAIN QUERY PLAN SELECT 1",
    ]  # fmt: skip
    for sql in statements:
        assert sql_module._classify(sql) == _reference_class(sql), sql


def _cached_key_bytes() -> int:
    return sum(sys.getsizeof(k) for k in list(sql_module.CLASSES))


def test_the_class_cache_is_bounded_by_size_not_only_by_count():
    sql_module.CLASSES.clear()
    sql_module._cache_chars = 0
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        # 300 distinct 110 KB statements (the issue saw 2,000 of them hold 207 MB).
        for i in range(300):
            sql = f"INSERT INTO t VALUES ({i}, '" + "x" * 110_000 + "')"
            assert statement_class(sql) == "write"
        # And many mid-sized ones, which are kept until the size bound.
        for i in range(1_000):
            assert statement_class(f"SELECT {i} /* " + "y" * 10_000 + " */") == "read"
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    bound = sql_module._CACHE_MAX_CHARS + sql_module._CACHE_MAX * 200
    assert _cached_key_bytes() <= bound
    assert held < bound + 1_000_000, f"{held / 1e6:.1f} MB held"
    assert len(sql_module.CLASSES) >= 100  # it still caches


def test_the_cache_still_serves_capture_with_get():
    sql_module.CLASSES.clear()
    sql = 'SELECT "shop_item"."id" FROM "shop_item" WHERE "id" = %s'
    assert sql_module.CLASSES.get(sql) is None
    assert statement_class(sql) == "read"
    assert sql_module.CLASSES.get(sql) == "read"  # what capture.py's fast path reads
    long = "SELECT 1 /*" + "z" * (sql_module._ENTRY_MAX + 1) + "*/"
    assert statement_class(long) == "read"
    assert sql_module.CLASSES.get(long) is None  # classified each time, never kept
