"""A real browser on `lockwatch serve` (daphne), with real lock contention in other processes.

The server, the lock holder and the writer are separate processes sharing only
the store and the watched SQLite file, as in real use. Nothing is reloaded:
the busy error must reach the open page through the relay and the websocket.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, STATUS_LIVE, require_browser
from tests.support.servers import BLOCKER_SITE, TOKEN, WAITER_SITE, Server, contention

# Every test here drives a real Chromium (select with -m browser, leave out with -m "not browser").
pytestmark = pytest.mark.browser

# The README's screenshot is refreshed only on request: tests never write tracked files.
#   LOCKWATCH_SCREENSHOT=docs/dashboard.png .venv/py311/bin/python -m pytest tests/test_browser.py
SCREENSHOT_TO = os.environ.get("LOCKWATCH_SCREENSHOT")


BUSY_ROW = """([waiter, blocker, n]) => {
    const rows = [...document.querySelectorAll('#events-table tr.kind-busy')]
        .filter(r => r.textContent.includes(waiter) && r.textContent.includes(blocker));
    return rows.length >= n;
}"""
BUSY_MARK = """([blocker, n]) => {
    const gd = document.getElementById('plot-timeline');
    if (!gd || !gd.data) return false;
    const marks = gd.data.filter(t => t.name === 'busy error')
        .flatMap(t => t.customdata).filter(c => c[4] === blocker);
    const holds = gd.data.filter(t => t.name === 'transaction hold')
        .flatMap(t => t.customdata).filter(c => c[1] === blocker);
    return marks.length >= n && holds.length >= 1;
}"""
MARKER_POSITION = """() => {
    const gd = document.getElementById('plot-timeline');
    gd.scrollIntoView({block: 'center'});
    const trace = gd.data.find(t => t.name === 'busy error');
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
    const box = gd.getBoundingClientRect();
    return [box.left + xa._offset + xa.d2p(trace.x[0]), box.top + ya._offset + ya.d2p(trace.y[0])];
}"""


def test_busy_error_and_its_blocker_appear_live(world, tmp_path):
    from playwright.sync_api import sync_playwright

    server, env = world
    base = f"http://127.0.0.1:{server.port}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            page.goto(f"{base}/?token={TOKEN}&window=5m")
            assert page.url == f"{base}/?window=5m"  # logged in; the token left the URL
            page.wait_for_function(STATUS_LIVE, timeout=15_000)
            page.wait_for_selector("#events-table table")
            page.evaluate("window.__sameDocument = true")

            assert contention(env, tmp_path / "ready1") == "failed: database is locked"
            page.wait_for_function(BUSY_ROW, arg=[WAITER_SITE, BLOCKER_SITE, 1], timeout=15_000)
            page.wait_for_function(BUSY_MARK, arg=[BLOCKER_SITE, 1], timeout=15_000)
            assert page.evaluate("window.__sameDocument") is True  # no reload happened
            assert page.locator("#lw-feed li.feed-busy").count() >= 1
            assert int(page.locator("#fig-busy").inner_text()) >= 1
            callsites = page.locator("#callsites").inner_text()
            assert BLOCKER_SITE in callsites and WAITER_SITE in callsites

            page.locator("#card-timeline").scroll_into_view_if_needed()
            page.evaluate("window.scrollTo(0, 0)")
            page.wait_for_timeout(300)  # let plotly finish its transitions
            shot = Path(SCREENSHOT_TO) if SCREENSHOT_TO else tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=False)
            assert shot.stat().st_size > 10_000

            # The server restarts; the page reconnects by itself and catches up.
            server.stop()
            page.wait_for_function(
                "() => !document.getElementById('lw-status').textContent.startsWith('live')",
                timeout=10_000,
            )
            server.start()
            server.wait_ready()
            page.wait_for_function(STATUS_LIVE, timeout=20_000)
            assert contention(env, tmp_path / "ready2") == "failed: database is locked"
            page.wait_for_function(BUSY_ROW, arg=[WAITER_SITE, BLOCKER_SITE, 2], timeout=15_000)
            page.wait_for_function(BUSY_MARK, arg=[BLOCKER_SITE, 2], timeout=15_000)
            assert page.evaluate("window.__sameDocument") is True
            assert errors == []
        finally:
            browser.close()


def test_pause_holds_updates_until_resumed(world, tmp_path):
    from playwright.sync_api import sync_playwright

    server, env = world
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.port}/?token={TOKEN}&window=5m")
            page.wait_for_function(STATUS_LIVE, timeout=15_000)
            page.wait_for_selector("#events-table table")
            page.click("#lw-pause")
            assert page.locator("#lw-status").inner_text() == "paused"
            assert contention(env, tmp_path / "ready", seconds=1.5) == "failed: database is locked"
            time.sleep(1.5)  # the flusher and relay have had their time
            assert page.locator("#events-table tr.kind-busy").count() == 0
            page.click("#lw-pause")
            page.wait_for_function(BUSY_ROW, arg=[WAITER_SITE, BLOCKER_SITE, 1], timeout=15_000)
            page.wait_for_function(BUSY_MARK, arg=[BLOCKER_SITE, 1], timeout=15_000)

            # Hovering the busy marker shows its call site and blocker; a click opens it.
            x, y = page.evaluate(MARKER_POSITION)
            page.mouse.move(x, y)
            page.wait_for_selector("#plot-timeline .hoverlayer .hovertext", timeout=5_000)
            hover = page.locator("#plot-timeline .hoverlayer").text_content() or ""
            assert WAITER_SITE in hover and BLOCKER_SITE in hover
            page.mouse.click(x, y)
            page.wait_for_url("**/events/*/", timeout=10_000)
            detail = page.locator("main").inner_text()
            assert "Chain of blockers" in detail and BLOCKER_SITE in detail
        finally:
            browser.close()


def test_the_page_keeps_up_with_5000_events_a_second(tmp_path):
    require_browser()
    import threading

    from playwright.sync_api import sync_playwright

    from lockwatch import events, store

    path = tmp_path / "lockwatch.sqlite3"
    store.connect(path).close()
    server = Server(path, free_port(), tmp_path / "serve.log")
    server.start()
    stop = threading.Event()
    written = [0]

    def load() -> None:
        # 500 events every 0.1 s from another thread, as a busy project's flushers would.
        w = store.Writer(path)
        try:
            while not stop.is_set():
                t = time.time()
                rows = [
                    events.row(ts=t, kind="query", duration_ms=1.0, hold_ms=0.5, wait_ms=0.0,
                               call_site=f"load.py:{i % 20} in f", pid=4000 + i % 4,
                               thread="MainThread", context="program:load", sql="UPDATE t")
                    for i in range(500)
                ]  # fmt: skip
                w.write(rows, [], [])
                written[0] += len(rows)
                time.sleep(max(0.0, 0.1 - (time.time() - t)))
        finally:
            w.close()

    try:
        server.wait_ready()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{server.port}/?token={TOKEN}&window=5m")
                page.wait_for_function(STATUS_LIVE, timeout=15_000)
                thread = threading.Thread(target=load)
                thread.start()
                start = page.evaluate("[window.lockwatch.frames, window.lockwatch.refreshes]")
                time.sleep(5)
                end = page.evaluate("[window.lockwatch.frames, window.lockwatch.refreshes]")
                stop.set()
                thread.join(10)
                frames, refreshes = end[0] - start[0], end[1] - start[1]
                # Batched: many events a frame, never one frame per event.
                assert 2 <= frames <= written[0] / 100
                assert refreshes >= 2  # the page kept redrawing under load
                assert "load.py:" in page.locator("#events-table").inner_text()
            finally:
                browser.close()
    finally:
        stop.set()
        server.stop()
