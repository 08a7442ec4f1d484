"""Honest liveness in a real browser (issue 14): figures fall back when nothing arrives,
and the feed says how old each item is and lets old ones go.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lockwatch import events, store
from tests.conftest import free_port
from tests.support.browser import open_page, require_browser
from tests.support.dashboard import incident
from tests.support.servers import TOKEN, Server

pytestmark = pytest.mark.browser


@pytest.fixture
def empty_server(tmp_path: Path) -> Iterator[Server]:
    require_browser()
    path = tmp_path / "lockwatch.sqlite3"
    store.connect(path).close()
    server = Server(path, free_port(), tmp_path / "serve.log")
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def write(path: Path, rows: list[dict[str, Any]]) -> None:
    w = store.Writer(path)
    try:
        w.write([events.row(**r) for r in rows], [], [])
    finally:
        w.close()


def busy(ts: float, site: str) -> dict[str, Any]:
    return dict(ts=ts, kind="busy", classification="timeout", duration_ms=300.0, wait_ms=300.0,
                call_site=site, context="command:sync", pid=7, thread="MainThread",
                blocker_pid=8, blocker_thread="MainThread", blocker_call_site="b.py:1 in hold",
                blocker_context="command:restock")  # fmt: skip


RATE = """() => {
    const el = document.getElementById('fig-rate');
    return el ? parseFloat(el.textContent) : NaN;
}"""


def test_the_event_rate_falls_to_zero_when_nothing_arrives(empty_server, browser):  # noqa: F811
    page = open_page(browser, f"http://127.0.0.1:{empty_server.port}/?token={TOKEN}&window=5m")
    # A burst that is already 8 s old: it leaves the 10 s rate within about 2 s.
    now = time.time()
    write(empty_server.store, [
        dict(ts=now - 8.6 + i * 0.01, kind="query", duration_ms=1.0, hold_ms=0.5,
             call_site="load.py:1 in f", pid=9, thread="MainThread", context="program:load",
             sql="UPDATE t SET x = 1") for i in range(60)
    ])  # fmt: skip
    page.wait_for_function(f"() => ({RATE})() > 0", timeout=5_000)
    frames = page.evaluate("window.lockwatch.frames")
    # Nothing more is written: the header, polled, must fall to 0 by itself.
    page.wait_for_function(f"() => ({RATE})() === 0", timeout=8_000)
    assert page.evaluate("window.lockwatch.frames") - frames <= 1  # no batch brought it
    assert page.errors == []


FEED_AGES = """() => [...document.querySelectorAll('#lw-feed li')].map(li =>
    [li.querySelector('.site').textContent, li.querySelector('time').textContent,
     li.querySelector('time').title])"""


def test_feed_items_carry_their_time_and_age_out(empty_server, browser):  # noqa: F811
    page = open_page(browser, f"http://127.0.0.1:{empty_server.port}/?token={TOKEN}&window=5m")
    now = time.time()
    write(empty_server.store, [busy(now - 56, "old.py:1 in f"), busy(now, "new.py:2 in g")])
    page.wait_for_function("() => document.querySelectorAll('#lw-feed li').length === 2")
    items = {site: (age, title) for site, age, title in page.evaluate(FEED_AGES)}
    old_age = int(items["old.py:1 in f"][0].split()[0])
    assert 50 <= old_age <= 60, items
    assert items["new.py:2 in g"][0] in ("now", "1 s ago", "2 s ago", "3 s ago"), items
    assert items["old.py:1 in f"][1].endswith("UTC")  # its own time, on hover
    assert page.locator("#lw-feed li.old").count() == 1  # faded
    # The old one leaves once a minute old; the new one stays.
    page.wait_for_function(
        "() => ![...document.querySelectorAll('#lw-feed .site')]"
        ".some(s => s.textContent === 'old.py:1 in f')",
        timeout=10_000,
    )
    assert [site for site, _, _ in page.evaluate(FEED_AGES)] == ["new.py:2 in g"]
    assert page.errors == []


def partial_bytes(requests: list[Any]) -> list[tuple[str, int]]:
    """(path, bytes on the wire: headers and the body as sent) of each partial's response."""
    out = []
    for req in requests:
        if "/partials/" not in req.url:
            continue
        sizes = req.sizes()
        path = req.url.split("/partials/")[1].split("?")[0]
        out.append((path, sizes["responseHeadersSize"] + sizes["responseBodySize"]))
    return out


def test_a_live_refresh_is_bounded(empty_server, browser, capsys):  # noqa: F811
    import threading

    write(empty_server.store, incident(time.time(), 1000, distinct=True))
    page = open_page(browser, f"http://127.0.0.1:{empty_server.port}/?token={TOKEN}&window=5m")
    page.wait_for_function("() => (document.getElementById('plot-timeline').data || []).length")
    finished: list[Any] = []
    seen: list[tuple[float, Any]] = []  # (when it finished, the request)

    def on_finished(req: Any) -> None:
        finished.append(req)
        seen.append((time.monotonic(), req))

    page.on("requestfinished", on_finished)
    stop = threading.Event()

    def load() -> None:  # 200 new events a second, each text new: every refresh changes
        n = 1000
        while not stop.is_set():
            write(empty_server.store, incident(time.time() + 240, 10, distinct=True, start=n))
            n += 10
            time.sleep(0.1)

    thread = threading.Thread(target=load)
    started = time.monotonic()
    thread.start()
    try:
        page.wait_for_timeout(5_000)
    finally:
        stop.set()
        thread.join(10)
    busy = partial_bytes(finished)
    busy_s = time.monotonic() - started
    # The last trailing refreshes follow the relay's last batches, late on a loaded machine:
    # idle starts once no section but the header has refreshed for 3 s (never, if it loops).
    settle_until = time.monotonic() + 30
    while True:
        page.wait_for_timeout(500)
        quiet = [t for t, req in seen if "/partials/header/" not in req.url]
        if not quiet or time.monotonic() - quiet[-1] >= 3:
            break
        assert time.monotonic() < settle_until, "sections kept refreshing with nothing new"
    finished.clear()
    idle_started = time.monotonic()
    page.wait_for_timeout(3_000)
    idle = partial_bytes(finished)
    idle_s = time.monotonic() - idle_started

    timeline = [n for path, n in busy if path.startswith("chart/timeline")]
    assert timeline and max(timeline) <= 100_000 + 1_000, timeline  # body plus headers
    per_minute = sum(n for _, n in busy) * 60 / busy_s
    idle_per_minute = sum(n for _, n in idle) * 60 / idle_s
    with capsys.disabled():
        print(
            f"\nlive refresh: timeline {max(timeline):,} B at most ({len(timeline)} in"
            f" {busy_s:.1f} s); one tab {per_minute / 1e6:.2f} MB/min under load,"
            f" {idle_per_minute / 1e3:.1f} KB/min idle"
        )
        by: dict[str, list[int]] = {}
        for path, n in busy:
            by.setdefault(path, []).append(n)
        print({path: (len(ns), sum(ns)) for path, ns in by.items()})
    # Heavy sections every 2 s at most, the others every second: bounded under any load.
    assert len(timeline) <= busy_s / 2 + 2
    assert per_minute <= 6_000_000
    # Idle, only the header's poll, and a bodiless 204 when it did not change.
    assert {path for path, _ in idle} <= {"header/"}, idle
    assert idle_per_minute <= 60_000
    assert page.errors == []
