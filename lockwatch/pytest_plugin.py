"""pytest plugin: explain a test that failed with 'database is locked'.

Off unless ``--lockwatch`` (or ``lockwatch = true`` in the ini file). Then
plain ``sqlite3`` connections are instrumented too, and a failing test's report
gets a lockwatch section naming the waiter, its classification and the blocker.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Generator
from typing import Any

import pytest

from lockwatch.events import TXN_HOLD, WAL_READ, WRITE_HOLD  # a leaf: nothing of Django's

LOCK_MESSAGES = ("database is locked", "database table is locked")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lockwatch")
    group.addoption(
        "--lockwatch", action="store_true", help="explain 'database is locked' failures"
    )
    group.addoption(
        "--lockwatch-summary",
        action="store_true",
        help="with --lockwatch: list the longest write-lock holds by test at the end",
    )
    parser.addini("lockwatch", "turn lockwatch on, as --lockwatch does", type="bool", default=False)


def _enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("lockwatch") or config.getini("lockwatch"))


def pytest_configure(config: pytest.Config) -> None:
    if not _enabled(config):
        return
    import lockwatch

    lockwatch.instrument_sqlite3()
    config._lockwatch_started = time.time()  # type: ignore[attr-defined]


SETUP_LABEL = "test:setup"


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: Any
) -> Generator[None, Any, None]:
    """A session, package, module or class fixture's setup is shared by the tests
    that use it: its events are test:setup (pytest-django's test database and its
    migrations among them), not the first test that happened to need it."""
    token = None
    if fixturedef.scope != "function":
        try:
            from lockwatch.capture.context import CURRENT, Context

            token = CURRENT.set(Context(label=SETUP_LABEL))
        except Exception:
            token = None
    try:
        yield
    finally:
        if token is not None:
            from lockwatch.capture.context import restore

            restore(token)


def _store_conn() -> sqlite3.Connection | None:
    from lockwatch import store
    from lockwatch.conf import get_config

    try:
        conn = store.connect(get_config().store, readonly=True)
    except Exception:
        return None
    conn.row_factory = sqlite3.Row
    return conn


def _busy_events(nodeid: str) -> list[sqlite3.Row]:
    """This test's busy errors; each already names its blocker (capture reads the holder table)."""
    import lockwatch

    lockwatch.flush()
    conn = _store_conn()
    if conn is None:
        return []
    try:
        return conn.execute(
            "SELECT * FROM events WHERE kind = 'busy' AND context = ? AND pid = ? ORDER BY id",
            (f"test:{nodeid}", os.getpid()),
        ).fetchall()
    finally:
        conn.close()


def _blocker_sql(row: sqlite3.Row) -> str | None:
    conn = _store_conn()
    if conn is None or not row["blocker_call_site"]:
        return None
    try:
        args = (row["db"], row["blocker_pid"], row["blocker_call_site"], row["ts"] + 1e-3)
        hold = (
            conn.execute(
                "SELECT sql FROM holds WHERE db = ? AND pid = ? AND call_site = ? AND lock_ts <= ?"
                " ORDER BY lock_ts DESC LIMIT 1",
                args,
            ).fetchone()
            or conn.execute(  # an autocommit write holds for its own statement
                f"SELECT sql FROM events WHERE {WRITE_HOLD} AND db = ?"
                " AND pid = ? AND call_site = ? AND ts <= ? ORDER BY ts DESC LIMIT 1",
                args,
            ).fetchone()
        )
        return hold["sql"] if hold else None
    finally:
        conn.close()


SQL_SHOWN = 160  # characters of a statement shown in the report


def shown_sql(sql: str | None) -> str:
    """A statement as the report shows it: on one line, trimmed, and with Django's ``%s``
    parameters as ``?``, as sqlite3's own are (a ``%%`` there is a literal ``%``)."""
    if not sql:
        return "?"
    text = " ".join(sql.split())
    text = re.sub(r"%(%|s)", lambda m: "%" if m.group(1) == "%" else "?", text)
    return text if len(text) <= SQL_SHOWN else text[: SQL_SHOWN - 1].rstrip() + "…"


def _context_name(context: str | None, nodeid: str) -> str:
    if context == f"test:{nodeid}":
        return "this test"
    if context == SETUP_LABEL:
        return "pytest-django's test database setup (test:setup)"
    return context or "?"


def explain(row: sqlite3.Row, nodeid: str, previous: sqlite3.Row | None = None) -> str:
    """The report section for one busy error; a statement already shown is not repeated."""
    sql = shown_sql(row["sql"])
    same = previous is not None and shown_sql(previous["sql"]) == sql
    lines = [
        "waiting statement: the same" if same else f"waiting statement: {sql}",
        f"  at {row['call_site']} (thread {row['thread']})",
        f"classification: {row['classification']} ({row['error_name']}), "
        f"waited {row['wait_ms'] or 0:.0f} ms",
    ]
    if row["blocker_context"] in (None, "unknown", "outside"):
        pid = f" (pid {row['blocker_pid']})" if row["blocker_pid"] else ""
        lines.append(
            f"blocker: another program{pid}; no instrumented connection held the write lock "
            "(pandas or SQLAlchemy on their own connection, a sqlite3 shell, a DB browser)"
        )
    elif row["blocker_context"] == "readers":
        lines.append("blocker: readers; the COMMIT waited for open read transactions")
    elif row["blocker_context"] == WAL_READ:
        lines.append(
            f"blocker: a read in pid {row['blocker_pid']}; SQLite held the write lock for an "
            "instant to read the WAL index a writer was changing"
        )
    else:
        held = _blocker_sql(row)
        took = "the same statement" if held and shown_sql(held) == sql else shown_sql(held)
        own = row["blocker_context"] == f"test:{nodeid}"
        lines += [
            f"blocker: pid {row['blocker_pid']} thread {row['blocker_thread']}, "
            f"{_context_name(row['blocker_context'], nodeid)}, "
            f"held the write lock for {row['blocker_held_ms'] or 0:.0f} ms",
            f"  took it with: {took}",
            f"  at {row['blocker_call_site']}",
        ]
        if row["blocker_same_thread"]:
            lines.append(
                "the holder is this same thread, on another connection: it cannot let go while "
                "this one waits, so waiting could never succeed"
            )
        if own:
            lines.append(
                "what to do: the test's own django_db transaction holds the write lock while a "
                "second connection writes. Share Django's connection with the second client, "
                "commit first, or use @pytest.mark.django_db(transaction=True)."
            )
        else:
            lines.append(
                "what to do: shorten the blocker's transaction, or raise the second "
                "connection's timeout."
            )
    if row["classification"] == "upgrade":
        lines.append(
            "the waiter read before writing in a deferred transaction: use "
            '"transaction_mode": "IMMEDIATE", or write first.'
        )
    return "\n".join(lines)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, Any, None]:
    outcome: Any = yield
    report = outcome.get_result()
    if not _enabled(item.config) or not report.failed:
        return
    text = str(report.longrepr)
    if not any(m in text for m in LOCK_MESSAGES):
        return
    try:
        rows = _busy_events(item.nodeid)
        shown = rows[-3:]
        body = "\n\n".join(
            explain(r, item.nodeid, shown[i - 1] if i else None) for i, r in enumerate(shown)
        )
        if not body:
            body = "no busy error was captured for this test (is lockwatch's backend in use?)"
        report.sections.append(("lockwatch: database is locked", body))
    except Exception as exc:  # the plugin must never hide the real failure
        report.sections.append(("lockwatch", f"could not explain: {exc!r}"))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if not (_enabled(config) and config.getoption("lockwatch_summary")):
        return
    import lockwatch

    lockwatch.flush()
    conn = _store_conn()
    if conn is None:
        return
    started = getattr(config, "_lockwatch_started", 0.0)
    rows = conn.execute(
        "SELECT context, max(hold_ms) AS hold, coalesce(lock_call_site, call_site) AS site"
        f" FROM events WHERE {TXN_HOLD} AND pid = ?"
        " AND ts >= ? AND context LIKE 'test:%' AND context != ?"  # not the database setup
        " GROUP BY context ORDER BY hold DESC LIMIT 10",
        (os.getpid(), started, SETUP_LABEL),
    ).fetchall()
    conn.close()
    terminalreporter.section("lockwatch: longest write-lock holds")
    if not rows:
        terminalreporter.write_line("no test took the write lock")
    for r in rows:
        terminalreporter.write_line(f"{r['hold']:9.1f} ms  {r['context'][5:]}  ({r['site']})")
