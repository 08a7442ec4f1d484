import csv
import io
import subprocess
import sys

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from lockwatch import events, export, store
from lockwatch.filters import FilterError, parse


@pytest.fixture
def populated(tmp_path):
    path = tmp_path / "store.sqlite3"
    conn = store.connect(path)
    writer = store.Writer(path)
    rows = [
        events.row(
            kind="busy",
            ts=1_700_000_000.123456,
            classification="timeout",
            wait_ms=500.0,
            sql="INSERT INTO t VALUES (?)",
            call_site="app/v.py:3 in f",
            context="request:GET /x",
            pid=11,
            thread="t1",
            db="/d.sqlite3",
            blocker_pid=12,
            blocker_call_site="app/w.py:9 in g",
            blocker_context="x",
        ),
        events.row(
            kind="query",
            ts=1_700_000_001.0,
            duration_ms=1.5,
            sql='=HYPERLINK("http://evil")',
            call_site="-x.py:1 in f",
            pid=11,
            context="@ctx",
            thread="t1",
            db="/d.sqlite3",
        ),
        events.row(
            kind="query",
            ts=1_700_000_002.0,
            duration_ms=0.5,
            sql="SELECT 1",
            pid=13,
            context="command:batch",
            thread="t\tab",
            db="/d.sqlite3",
        ),
    ]
    writer.write(rows, [], [])
    writer.close()
    return path, conn


def test_header_starts_with_the_fixed_columns():
    assert events.CSV_HEADER[:15] == (
        "ts",
        "kind",
        "classification",
        "duration_ms",
        "wait_ms",
        "hold_ms",
        "sql",
        "call_site",
        "context",
        "pid",
        "thread",
        "db",
        "blocker_pid",
        "blocker_call_site",
        "blocker_context",
    )


def test_round_trip_and_escaping(populated):
    path, conn = populated
    text = "".join(export.lines(conn))
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == 3
    busy, query, other = rows
    assert busy["ts"] == "2023-11-14T22:13:20.123456Z"
    assert busy["classification"] == "timeout"
    assert busy["blocker_call_site"] == "app/w.py:9 in g"
    assert busy["hold_ms"] == ""
    # Formula-like cells are escaped, and unescape back to the stored value.
    assert query["sql"] == '\'=HYPERLINK("http://evil")'
    assert export.unescape_cell(query["sql"]) == '=HYPERLINK("http://evil")'
    assert export.unescape_cell(query["call_site"]) == "-x.py:1 in f"
    assert export.unescape_cell(query["context"]) == "@ctx"
    assert other["thread"] == "t\tab"
    stored = {r["id"]: dict(r) for r in conn.execute("SELECT * FROM events")}
    for row in rows:
        original = stored[int(row["id"])]
        for name in ("sql", "call_site", "context", "thread", "kind"):
            assert export.unescape_cell(row[name]) == (original[name] or "")


@given(st.one_of(st.text(), st.sampled_from(["'=x", "''+1", "'", "'abc", "-", "\r=", "\t"])))
def test_any_cell_round_trips(value):
    out = io.StringIO()
    csv.writer(out).writerow([export.safe_cell(value)])
    (back,) = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    cell = back[0]
    assert export.unescape_cell(cell) == value
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))


def test_filters(populated):
    _, conn = populated
    assert export.count(conn, parse({"kind": "busy"})) == 1
    assert export.count(conn, parse({"pid": "13"})) == 1
    assert export.count(conn, parse({"context": "command:"})) == 1
    assert export.count(conn, parse({"since": "2023-11-14T22:13:21Z"})) == 2
    assert export.count(conn, parse({"call_site": "app/w.py:9 in g"})) == 1
    assert export.count(conn, parse({"q": "SELECT"})) == 1


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"kind": "bogus"}, "kind='bogus'"),
        ({"since": "yesterday"}, "since='yesterday'"),
        ({"pid": "-1"}, "pid='-1'"),
        ({"classification": "x"}, "classification='x'"),
        ({"colour": "red"}, "'colour'"),
    ],
)
def test_bad_filters_name_the_value(params, named):
    with pytest.raises(FilterError, match=named):
        parse(params)


def test_relative_times():
    f = parse({"since": "15m"})
    import time

    assert time.time() - f.since == pytest.approx(900, abs=5)


def test_cli_export(populated, tmp_path):
    path, _ = populated
    out = tmp_path / "out.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lockwatch",
            "export",
            "--store",
            str(path),
            "-o",
            str(out),
            "--kind",
            "query",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(out.open(newline="")))
    assert [r["kind"] for r in rows] == ["query", "query"]


def test_cli_bad_filter_is_one_line_exit_2(populated):
    path, _ = populated
    done = subprocess.run(
        [sys.executable, "-m", "lockwatch", "export", "--store", str(path), "--since", "soon"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "since='soon'" in done.stderr
    assert "Traceback" not in done.stderr


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "since",
                "until",
                "kind",
                "classification",
                "call_site",
                "context",
                "pid",
                "q",
                "page",
                "x",
            ]
        ),
        st.one_of(
            st.text(max_size=40),
            st.integers().map(str),
            st.sampled_from(
                ["15m", "2h", "1d", "2026-01-01T00:00:00Z", "busy", "timeout", "-1", "1e9", "\x00"]
            ),
        ),
        max_size=5,
    )
)
def test_fuzzed_filters_either_parse_or_say_why(params):
    try:
        f = parse(params)
    except FilterError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    where, args = f.where()
    import sqlite3

    conn = sqlite3.connect(":memory:")
    conn.execute(f"CREATE TABLE events ({', '.join(events.NAMES)})")
    conn.execute("SELECT count(*) FROM events" + (f" WHERE {where}" if where else ""), args)


def test_writer_sets_the_stored_ids(tmp_path):
    path = tmp_path / "store.sqlite3"
    writer = store.Writer(path)
    kinds = ["query", "query", "busy", "query", "transaction", "transaction", "wait", "query"]
    for _ in range(2):
        rows = [events.row(kind=k, ts=float(i), context=f"S{i}") for i, k in enumerate(kinds)]
        writer.write(rows, [], [])
        stored = dict(writer.conn.execute("SELECT id, context FROM events").fetchall())
        assert [stored[row["id"]] for row in rows] == [f"S{i}" for i in range(len(kinds))]


def test_cli_progress_bar_on_a_terminal(tmp_path):
    import os
    import pty

    path = tmp_path / "big.sqlite3"
    writer = store.Writer(path)
    writer.write([events.row(kind="query", ts=float(i), sql="SELECT 1") for i in range(60_500)],
                 [], [])  # fmt: skip
    writer.close()
    master, slave = pty.openpty()
    done = subprocess.run(
        [sys.executable, "-m", "lockwatch", "export", "--store", str(path), "-o",
         str(tmp_path / "out.csv")],
        stderr=slave, capture_output=False, stdout=subprocess.DEVNULL, timeout=120,
    )  # fmt: skip
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    assert done.returncode == 0
    assert b"60,500/60,500 events" in shown
    assert b"[" in shown and b"#" in shown
    lines = (tmp_path / "out.csv").read_text().count("\n")
    assert lines == 60_501


def test_cli_no_progress_bar_when_piped(populated):
    path, _ = populated
    done = subprocess.run(
        [sys.executable, "-m", "lockwatch", "export", "--store", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == ""


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
@example(1.1640625)  # an exact tie: rounded half to even, as datetime does
@example(1_700_000_000.9999996)  # rounds up into the next second
def test_fast_times_match_python_iso(ts):
    assert export.fast_iso(ts) == events.iso(ts)


@given(st.one_of(st.text(), st.sampled_from(["'=x", "''+1", "'", "-", "\r=", "\t", "@a"])))
def test_sql_escaping_matches_safe_cell(value):
    import sqlite3

    conn = sqlite3.connect(":memory:")
    (escaped,) = conn.execute(f"SELECT {export._ESCAPE.format(c=':v')}", {"v": value}).fetchone()
    assert escaped == export.safe_cell(value)
