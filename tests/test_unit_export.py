import csv
import io
import subprocess
import sys

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from lockwatch import events, store
from lockwatch.store import export
from lockwatch.store.filters import FilterError, parse


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


# The export's SQL path against the obvious one: csv.writer over each stored row.

_COLUMN_LIST = ", ".join(f'"{c.name}"' for c in events.COLUMNS)


def reference_csv(conn, where="", args=()):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(events.CSV_HEADER)
    cursor = conn.cursor()
    cursor.row_factory = None
    sql = f"SELECT {_COLUMN_LIST} FROM events {where} ORDER BY id"
    for row in cursor.execute(sql, args):
        cells = []
        for column, value in zip(events.COLUMNS, row, strict=True):
            if column.name in ("ts", "lock_ts") and isinstance(value, float):
                value = export.fast_iso(value)
            elif isinstance(value, str):  # by the value's type, whatever the column's
                value = export.safe_cell(value)
            elif column.sqltype == "TEXT" and isinstance(value, bytes):
                text = value.decode()  # SQLite's || makes text of a blob
                value = "'" + text if export.safe_cell(text) != text else value
            cells.append(value)
        writer.writerow(cells)
    return out.getvalue()


def raw_store(tmp_path, rows, name="raw.sqlite3"):
    """A store holding exactly these rows (any types: the schema's affinities apply)."""
    path = tmp_path / name
    conn = store.connect(path)
    names = [n for n in events.NAMES if n != "id"]
    columns = ", ".join(f'"{n}"' for n in names)
    conn.executemany(
        f"INSERT INTO events ({columns}) VALUES ({', '.join('?' * len(names))})",
        [[row.get(n) for n in names] for row in rows],
    )
    return conn


def export_text(conn, **kwargs):
    return "".join(export.lines(conn, **kwargs))


# Values of the column's own type that the SQL writes itself ("clean"), and the rest:
# other types, NUL, blobs, floats that are not 3-decimal, times on rounding ties.
_SPECIAL_TEXT = [
    "'=x", "''+1", "'", "-3", "=1+1", "@a", "\t", "\rx", "a,b", 'say "hi"', "two\nlines", "cr\r",
    "", " lead", "trail ", "é", "💥", "+", "'=", "A", ".", "<", "=", ">", "?", "%s", "%",
    "/tmp/app.sqlite3", "shop/views.py:40 in f",
]  # fmt: skip
_CLEAN = {
    "TEXT": st.one_of(
        st.none(),
        st.text(st.characters(exclude_characters="\x00\x1a", exclude_categories=["Cs"])),
        st.sampled_from(_SPECIAL_TEXT),
    ),
    "INTEGER": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, 7])),
    "REAL": st.one_of(
        st.none(),
        st.integers(0, 10**7).map(lambda n: n / 1000),
        st.integers(0, 10**15 - 1).map(lambda n: n / 1000),
        st.sampled_from([0.0, 0.052, 5001.2, 100.0, 2.5, 123456789.123, 999999999999.999]),
    ),
    "TIME": st.floats(min_value=0, max_value=4_102_444_800),
}
_DIRTY = {
    "TEXT": st.one_of(
        st.text(max_size=8),  # NUL included
        st.sampled_from(["x\x00y", "\x00", "\x1a", b"abc", b"=x", b"a,b", b""]),
        st.integers(-5, 5),
    ),
    "INTEGER": st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([2.0, 1.5, "abc", "12", "=1", "a,b", b"xy"]),
    ),
    "REAL": st.one_of(
        st.floats(allow_nan=False),
        st.sampled_from([-0.0, 0.1 + 0.2, 1e-05, -0.5, 1e12, 0.0005, 1e16, "abc", "1.5", b"xy"]),
    ),
    "TIME": st.one_of(
        st.integers(0, 10**6).map(lambda n: 1_700_000_000 + n / 8),  # ties, whole seconds
        st.sampled_from(
            [
                1.1640625,
                1_700_000_000.9999996,
                1_700_000_000.5,
                86_399.9999999,
                -1.5,
                3e11,
                253_402_300_799.0,
                1_700_000_000.0000005,
                None,
                "soon",
                b"\x00",
            ]
        ),
    ),
}


@st.composite
def event_rows(draw):
    """Rows from a few templates (so values and kinds repeat, as in real stores), each
    with its own times; now and then a value changes, now and then to a dirty one."""

    def cell(column, dirty):
        kind = "TIME" if column.name in ("ts", "lock_ts") else column.sqltype
        if column.name == "kind" and not dirty:
            return draw(st.one_of(st.sampled_from(events.KINDS), _CLEAN["TEXT"]))
        return draw((_DIRTY if dirty else _CLEAN)[kind])

    columns = [c for c in events.COLUMNS if c.name != "id"]
    templates = []
    for _ in range(draw(st.integers(1, 4))):
        dirty = draw(st.integers(0, 3)) == 0
        templates.append(
            {c.name: cell(c, dirty and draw(st.integers(0, 9)) == 0) for c in columns
             if draw(st.booleans())}
        )  # fmt: skip
    rows = []
    for i in draw(st.lists(st.integers(0, 3), min_size=1, max_size=25)):
        row = dict(templates[i % len(templates)])
        row["ts"] = cell(events.COLUMNS[0], draw(st.integers(0, 9)) == 0)
        if "lock_ts" in row:
            row["lock_ts"] = draw(st.one_of(st.none(), _CLEAN["TIME"], _DIRTY["TIME"]))
        if draw(st.integers(0, 4)) == 0:
            column = draw(st.sampled_from(columns))
            row[column.name] = cell(column, draw(st.booleans()))
        rows.append(row)
    return rows


@given(rows=event_rows(), chunk=st.sampled_from([1, 3, 5000]))
def test_sql_lines_match_csv_writer(tmp_path_factory, rows, chunk):
    conn = raw_store(tmp_path_factory.mktemp("export"), rows)
    assert export_text(conn, chunk=chunk) == reference_csv(conn)


@given(st.lists(st.one_of(_CLEAN["REAL"], _DIRTY["REAL"], st.floats()), max_size=20))
@example([1e-05, 100.0, 0.1 + 0.2, 1e16, 123.456, 5e-324, float("inf"), -0.0, 0.0])
def test_numbers_are_written_as_repr(values):
    import sqlite3

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (x REAL)")  # as stored: -0.0 comes back as 0.0
    conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
    for stored, cell in conn.execute(f"SELECT x, {export._real_sql('x')} FROM t"):
        if isinstance(stored, float) and 0 <= stored < 1e12 and round(stored, 3) == stored:
            assert cell == repr(stored)  # what capture stores is never left to Python
        elif stored is None:
            assert cell is None
        else:
            assert cell in (repr(stored), export._MARK)


def test_realistic_rows_and_a_stray_column(tmp_path, monkeypatch):
    # Rows shaped like each kind's (the fast lines), and where the plan's sample does
    # not look (ids 101-149), a row with a column its kind never fills, and one without
    # a column its kind always fills. SQLite writes them all: none is left to Python.
    common = dict(pid=11, thread="t1", db="/d.sqlite3", context="request:GET /x", alias="default")
    rows = []
    for i in range(3000):
        kind = events.KINDS[i % len(events.KINDS)]
        row = dict(common, kind=kind, ts=1_700_000_000 + i * 0.0137, duration_ms=round(i * 0.37, 3))
        if kind in ("query", "wait", "busy"):
            row.update(sql='SELECT "a", "b" FROM t', call_site="app/v.py:3 in f")
        if kind == "transaction":
            row.update(lock_ts=row["ts"] + 0.0001, begin_mode="deferred", hold_ms=2.9)
        if kind == "request":
            row.update(status=200, db_ms=1.4, path="/x")
        rows.append({n: v for n, v in row.items() if n in events.KIND_COLUMNS[kind]})
    rows[119]["outcome"] = "=stray"
    rows[125]["call_site"] = None  # a column its kind always fills in the sample
    conn = raw_store(tmp_path, rows)
    redone = []
    monkeypatch.setattr(export, "_reference", lambda cursor, ids: redone.extend(ids) or {})
    assert export_text(conn) == reference_csv(conn)
    assert "'=stray" in export_text(conn, chunk=1000)
    assert redone == []


def test_formula_escaping_follows_the_value_not_the_column(tmp_path):
    # SQLite keeps text that does not look like a number as text in a numeric column.
    rows = [
        dict(kind="request", ts=1_700_000_000.0, status="=HYPERLINK(\"http://evil\")",
             pid="@SUM(A1)", duration_ms="+1+2", queries=-3, db_ms=-1.5, path="/x"),
        dict(kind="request", ts="=1+1", status=200, pid=4, path="/y"),
    ]  # fmt: skip
    conn = raw_store(tmp_path, rows)
    text = export_text(conn)
    assert text == reference_csv(conn)
    first, second = csv.DictReader(io.StringIO(text, newline=""))
    assert first["status"] == '\'=HYPERLINK("http://evil")'
    assert first["pid"] == "'@SUM(A1)" and first["duration_ms"] == "'+1+2"
    assert first["queries"] == "-3" and first["db_ms"] == "-1.5"  # numbers stay numbers
    assert second["ts"] == "'=1+1" and second["status"] == "200"


CONTROL = "".join(map(chr, [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F,
                            *range(0x80, 0xA0)]))  # fmt: skip


def test_cli_export_to_stdout_carries_no_terminal_escapes(tmp_path):
    title = "/x\x1b]0;owned\x07\x1b[2J\x9b31m\rfake"
    rows = [dict(kind="request", ts=1_700_000_000.0, path=title, thread="t\x08\x08", pid=1,
                 sql="SELECT 1\r\nFROM t", method="GET", status=200)]  # fmt: skip
    conn = raw_store(tmp_path, rows)
    conn.close()
    path = tmp_path / "raw.sqlite3"
    command = [sys.executable, "-m", "lockwatch", "export", "--store", str(path)]
    shown = subprocess.run(command, capture_output=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout.decode()
    assert [c for c in text if c in CONTROL] == []
    assert "\u241b]0;owned\u2407" in text  # ESC and BEL as their visible pictures
    assert "\ufffd31m" in text and "\u240dfake" in text  # a C1 CSI, a bare CR
    (row,) = csv.DictReader(io.StringIO(text, newline=""))
    assert row["sql"] == "SELECT 1\r\nFROM t"  # CR LF inside a quoted cell is kept
    # To a file, the cells are the stored values.
    out = tmp_path / "out.csv"
    assert subprocess.run([*command, "-o", str(out)], timeout=60).returncode == 0
    (row,) = csv.DictReader(out.open(newline="", encoding="utf-8"))
    assert row["path"] == title and row["thread"] == "t\x08\x08"


def test_filters_and_progress(tmp_path):
    rows = [
        dict(kind=("query", "busy")[i % 2], ts=1_700_000_000 + i, pid=i % 3, sql="SELECT 1")
        for i in range(50)
    ]
    conn = raw_store(tmp_path, rows)
    conn.execute("DELETE FROM events WHERE id % 7 = 0")  # ids with gaps
    cases = [
        {},
        {"kind": "busy"},
        {"pid": "2"},
        {"since": "2023-11-14T22:13:40Z"},
        {"until": "2023-11-14T22:13:30Z", "kind": "query"},
        {"q": "nothing"},
    ]
    for params in cases:
        where, args = parse(params).where()
        seen = []
        text = export_text(conn, filters=parse(params), progress=seen.append, chunk=4)
        assert text == reference_csv(conn, f"WHERE {where}" if where else "", args)
        total = export.count(conn, parse(params))
        assert seen == sorted(seen) and (seen[-1] if seen else 0) == total
