"""The incident view's partials (issue 14), without a browser: the busy and wait charts
zoom to the span with data, and the timeline draws a hold still going from the store's
open holds (only a live process's, and only in a window that ends now).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from urllib.parse import urlencode

from lockwatch import events
from tests.support.dashboard import figure, insert


def window(since: float, until: float) -> str:
    return urlencode({"window": "custom", "since": events.iso(since), "until": events.iso(until)})


def epoch(text: str) -> float:
    """A figure's naive UTC time as epoch seconds."""
    return datetime.fromisoformat(text + "+00:00").timestamp()


def test_busy_and_wait_charts_zoom_to_the_span_with_data(client, store_path):  # noqa: F811
    start = time.time() - 1200  # a 15 s incident 20 minutes ago
    insert(store_path, [
        dict(ts=start + i / 2, kind=kind, classification="timeout" if kind == "busy" else None,
             duration_ms=40.0, wait_ms=40.0, call_site="a.py:1 in f", pid=3)
        for i in range(31) for kind in ("busy", "wait")
    ])  # fmt: skip
    for name in ("busy", "waits"):
        fig = figure(client.get(f"/partials/chart/{name}/?window=1h"))
        lo, hi = (epoch(x) for x in fig["layout"]["xaxis"]["range"])
        assert lo <= start and hi >= start + 15, (name, lo, hi)
        assert hi - lo <= 60, (name, hi - lo)
        assert "with data" in fig["layout"]["xaxis"]["title"]["text"]
    # A window the data fills (most of it) is shown whole, as it was.
    fig = figure(client.get(f"/partials/chart/busy/?{window(start - 2, start + 17)}"))
    assert "with data" not in fig["layout"]["xaxis"]["title"]["text"]


def open_hold(path, pid: int, key: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO holds (key, db, pid, conn_id, thread, context, call_site, sql, lock_ts)"
            " VALUES (?, '/srv/db.sqlite3', ?, 1, 'MainThread', 'command:restock',"
            " 'shop/jobs.py:5 in restock', 'UPDATE stock SET n = n - 1', ?)",
            (key, pid, time.time() - 12),
        )
    conn.close()


def test_the_timeline_draws_a_live_processs_open_hold_to_now(client, store_path):  # noqa: F811
    insert(store_path, [dict(ts=time.time() - 30, kind="query", duration_ms=1.0, hold_ms=0.5,
                             call_site="a.py:1 in f", pid=3)])  # fmt: skip
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    open_hold(store_path, dead.pid, "dead")  # SQLite let go of its lock when it died
    open_hold(store_path, os.getpid(), "alive")
    fig = figure(client.get("/partials/chart/timeline/?window=5m"))
    held = [t for t in fig["data"] if t["name"] == "still held"]
    assert len(held) == 1 and len(held[0]["x"]) == 1, held
    assert held[0]["x"][0] >= 12_000  # held so far, in ms
    assert held[0]["customdata"][0][1] == "shop/jobs.py:5 in restock"
    assert held[0]["meta"]["lw_open"] >= time.time() - 5  # the page grows it from then
    # Its lane says what it is, and the axis leaves room past now for it to grow.
    assert f"command:restock · pid {os.getpid()}" in held[0]["y"]
    assert epoch(fig["layout"]["xaxis"]["range"][1]) > time.time() + 1
    # A window that ended has no "now": no open hold in it.
    past = figure(
        client.get(f"/partials/chart/timeline/?{window(time.time() - 300, time.time() - 1)}")
    )
    assert not [t for t in past["data"] if t["name"] == "still held"]
