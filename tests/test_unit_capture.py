import sqlite3
import types

import pytest

from lockwatch.capture import busyhandler, callsite
from lockwatch.capture.busy import classify
from lockwatch.pipeline.buffer import Buffer


def kw(**overrides):
    base = {
        "gave_up": False,
        "calls": 0,
        "read_txn": False,
        "dur": 0.0,
        "timeout": 5.0,
        "exact": True,
    }
    return {**base, **overrides}


@pytest.mark.parametrize(
    ("code", "overrides", "expected"),
    [
        (5, {"gave_up": True, "calls": 900}, "timeout"),
        (5, {"read_txn": True}, "upgrade"),
        (5, {"read_txn": True, "calls": 3}, "other"),
        (517, {}, "snapshot"),
        (6, {}, "locked"),
        (262, {}, "locked"),
        (261, {}, "other"),
        (5, {"exact": False, "dur": 4.9}, "timeout"),
        (5, {"exact": False, "dur": 0.001, "read_txn": True}, "upgrade"),
        (5, {"exact": False, "dur": 1.0, "read_txn": True}, "other"),
    ],
)
def test_classify(code, overrides, expected):
    assert classify(code, **kw(**overrides)) == expected


def test_buffer_drops_and_counts():
    buf = Buffer(3)
    for i in range(5):
        buf.append(i)
    assert (buf.accepted, buf.dropped, len(buf)) == (3, 2, 3)
    assert buf.drain() == [0, 1, 2]
    assert buf.drain() == []


def helper_frame():
    return callsite.find(1)


def test_call_site_is_the_first_user_frame():
    site = helper_frame()
    assert site[0] == __file__
    assert site[2] == "helper_frame"


def test_call_sites_of_code_made_at_run_time_are_classified_by_their_own_file():
    # Code objects made and freed in a loop may reuse each other's ids: the cache must
    # still classify each by its own file (the library's frame is skipped, the user's not).
    library = callsite._LIBRARY_PREFIXES[0] + "generated.py"
    for i in range(300):
        filename = library if i % 2 else "/srv/app/generated.py"
        code = compile("def f(find):\n    return find(1)\n", filename, "exec").co_consts[0]
        site = types.FunctionType(code, {})(callsite.find)
        del code
        if i % 2:
            assert site[0] == __file__  # past the library frame, to this test
        else:
            assert site == (filename, 2, "f")


def test_call_site_format_is_relative_to_the_project(tmp_path):
    callsite.configure(str(tmp_path))
    try:
        assert callsite.format((str(tmp_path / "shop" / "views.py"), 88, "checkout")) == (
            "shop/views.py:88 in checkout"
        )
        assert callsite.format(("/elsewhere/x.py", 3, "f")) == "/elsewhere/x.py:3 in f"
    finally:
        from lockwatch.conf import get_config

        cfg = get_config()
        callsite.configure(str(cfg.project_root), cfg.call_site_include, cfg.call_site_exclude)


def test_raw_handle_is_verified(tmp_path):
    conn = sqlite3.connect(tmp_path / "x.sqlite3")
    h = busyhandler.raw_handle(conn)
    assert h is not None
    assert busyhandler.db_filename(h) == str(tmp_path / "x.sqlite3")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("BEGIN")
    conn.execute("SELECT * FROM t").fetchall()
    assert busyhandler.txn_state(h) == busyhandler.SQLITE_TXN_READ
    conn.execute("INSERT INTO t VALUES (1)")
    assert busyhandler.txn_state(h) == busyhandler.SQLITE_TXN_WRITE
    conn.execute("COMMIT")
    assert busyhandler.txn_state(h) == busyhandler.SQLITE_TXN_NONE


@pytest.mark.parametrize(("fast", "calls"), [(False, range(6, 10)), (True, range(40, 400))])
def test_busy_handler_gives_up_at_the_timeout(tmp_path, fast, calls):
    path = tmp_path / "x.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(path, isolation_level=None, timeout=0)
    busy = busyhandler.BusyHandler(busyhandler.raw_handle(waiter), 0.1, fast=fast)
    busy.install()
    with pytest.raises(sqlite3.OperationalError):
        waiter.execute("BEGIN IMMEDIATE")
    assert busy.gave_up
    # SQLite's own schedule (1, 2, 5, 10 ... ms) by default; 0.25-2 ms polls when fast.
    assert busy.calls in calls
    assert busy.waited() == pytest.approx(0.1, abs=0.01)


def test_rows_fill_only_their_kinds_columns(lw, watched, monkeypatch):
    """The store binds only KIND_COLUMNS[kind]; anything else would be lost."""
    import threading

    from django.db import OperationalError

    from lockwatch import events
    from lockwatch.capture import records
    from lockwatch.capture.context import Context
    from tests.scenarios import hold_then_write

    seen: list = []
    original = records.to_row

    def spy(rec, limits):
        row = original(rec, limits)
        seen.append(row)
        return row

    import lockwatch.pipeline.flusher as flusher

    monkeypatch.setattr(flusher, "to_row", spy)
    errors = hold_then_write(watched(timeout=0.2), 0.4)
    assert isinstance(errors[1], OperationalError)
    lw.flush()
    ctx = Context(label="request:GET /", request_id="r", method="GET", path="/", queries=2)
    seen.append(
        records.to_row(
            records.Request(records.Who(threading.current_thread(), ctx, None), 1.0, 0.1, 200),
            records.Limits(100, 100),
        )
    )
    kinds = {row["kind"] for row in seen}
    assert kinds == set(events.KINDS)
    for row in seen:
        assert set(row) == set(events.NAMES)
        filled = {k for k, v in row.items() if v is not None} - {"id"}  # the store sets id
        assert filled <= set(events.KIND_COLUMNS[row["kind"]]), row["kind"]


def test_no_part_of_the_probe_is_left_a_stub():
    """Probe is made of parts (Holding, Transactions, Quick) that declare each other's
    methods as stubs raising NotImplementedError: the real one must win in the MRO."""
    from lockwatch.capture.probe import Probe

    stubs = 0
    for part in Probe.__mro__[1:]:
        for name, fn in vars(part).items():
            code = getattr(fn, "__code__", None)
            if code is not None and code.co_names == ("NotImplementedError",):
                stubs += 1
                assert getattr(Probe, name) is not fn, f"Probe.{name} is {part.__name__}'s stub"
    assert stubs >= 10  # the parts do declare each other's methods this way
