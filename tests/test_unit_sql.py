import pytest

from lockwatch.sql import begin_mode, fingerprint, statement_class


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
