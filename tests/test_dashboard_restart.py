"""The dashboard is killed (SIGKILL) and restarted; its clients reconnect and catch up.

A real `lockwatch serve` on a fixed port with a fixed LOCKWATCH_TOKEN, so the
signed login cookie survives the restart. Events are written by other
processes, as the watched project's flushers would, before the kill and while
the server is down. test_browser.py covers a clean stop and restart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, STATUS_LIVE, require_browser
from tests.support.servers import TOKEN, Server
from tests.support.ws import Client

DOWN_SITE = "jobs/while_down.py:9 in run"
# For the record (read it after a run): requests the poller made across the restart.
served: Counter[str] = Counter()


def write_elsewhere(store: Path, n: int, site: str) -> list[int]:
    """n busy errors written by another process; their ids."""
    code = (
        "import json, sys, time; from tests.support.dashboard import insert;"
        "rows = [dict(ts=time.time(), kind='busy', classification='timeout', duration_ms=300.0,"
        " wait_ms=300.0, call_site=sys.argv[2], context='command:job', pid=4242,"
        " thread='MainThread') for _ in range(int(sys.argv[3]))];"
        "print(json.dumps(insert(sys.argv[1], rows)))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(store), site, str(n)], cwd=ROOT, capture_output=True,
        text=True, timeout=60, check=True, env={**env, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    return json.loads(done.stdout)


def kill9(server: Server) -> None:
    assert server.proc is not None
    server.proc.kill()  # SIGKILL: no shutdown, no close frames
    server.proc.wait(10)
    server.proc = None


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Server]:
    with Server.with_story(tmp_path) as server:  # ids 1 to 7
        yield server


def login(server: Server) -> str:
    """The session cookie a browser gets from the printed URL."""
    conn = HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", f"/?token={TOKEN}")
        response = conn.getresponse()
        response.read()
        assert response.status == 302
        cookie = response.getheader("Set-Cookie") or ""
    finally:
        conn.close()
    name_value = cookie.split(";", 1)[0]
    assert name_value.startswith("lockwatch_session=")
    return name_value


def get(server: Server, path: str, cookie: str) -> int:
    conn = HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", path, headers={"Cookie": cookie})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


class Poller(threading.Thread):
    """Asks for the header partial every 50 ms, with the session cookie, until stopped."""

    def __init__(self, server: Server, cookie: str) -> None:
        super().__init__(daemon=True)
        self.server, self.cookie = server, cookie
        self.seen: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.seen.append(str(get(self.server, "/partials/header/", self.cookie)))
            except (OSError, HTTPException):  # refused, or cut off by the kill
                self.seen.append("down")
            time.sleep(0.05)


def test_a_client_catches_up_on_what_was_written_while_the_server_was_down(dashboard):
    server = dashboard
    cookie = login(server)
    ws = Client(server.port, cookie=cookie)
    assert ws.next("hello")["last_id"] == 7
    live_ids = write_elsewhere(server.store, 3, "jobs/before.py:1 in run")
    batch = ws.next("batch")
    assert (batch["first_id"], batch["last_id"], batch["count"]) == (8, 10, 3)
    last_seen = batch["last_id"]

    kill9(server)
    with pytest.raises(ConnectionError):
        ws.next()  # the socket died with the server
    ws.close()
    down_ids = write_elsewhere(server.store, 5, DOWN_SITE)
    assert down_ids == list(range(live_ids[-1] + 1, live_ids[-1] + 6))
    server.start()
    server.wait_ready()

    # Reconnect as lockwatch.js does: the login survives; hello with after = the last id seen.
    ws = Client(server.port, cookie=cookie)
    try:
        hello = ws.next("hello")
        assert hello["last_id"] == down_ids[-1]
        ws.send({"type": "hello", "after": last_seen})
        catch_up = ws.next("batch")
        assert catch_up["catch_up"] is True
        assert (catch_up["first_id"], catch_up["last_id"]) == (down_ids[0], down_ids[-1])
        assert catch_up["count"] == len(down_ids) and catch_up["busy"] == {"timeout": 5}
        assert {e["id"] for e in catch_up["events"]} <= set(down_ids)
        assert {e["call_site"] for e in catch_up["events"]} == {DOWN_SITE}
        # And it is live again: a new event arrives as a normal batch.
        (after_id,) = write_elsewhere(server.store, 1, "jobs/after.py:1 in run")
        batch = ws.next("batch")
        assert batch["last_id"] == after_id and "catch_up" not in batch
    finally:
        ws.close()


def test_requests_across_a_kill_and_restart_are_200_or_unreachable(dashboard):
    server = dashboard
    cookie = login(server)
    poller = Poller(server, cookie)
    poller.start()
    try:
        deadline = time.monotonic() + 10
        while poller.seen.count("200") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        kill9(server)
        time.sleep(0.3)
        server.start()
        server.wait_ready()
        before = len(poller.seen)
        deadline = time.monotonic() + 10
        while poller.seen[before:].count("200") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        poller.stop.set()
        poller.join(10)
    served.update(poller.seen)
    # Never an error page: served (the login survived), or plainly not there.
    assert set(poller.seen) <= {"200", "down"}, Counter(poller.seen)
    assert "down" in poller.seen
    assert poller.seen[-3:] == ["200"] * 3


@pytest.mark.browser
def test_the_page_reconnects_and_catches_up_after_a_kill(dashboard):
    require_browser()
    from playwright.sync_api import sync_playwright

    server = dashboard
    frames: list[dict[str, Any]] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on(
                "websocket",
                lambda ws: ws.on("framereceived", lambda data: frames.append(json.loads(data))),
            )
            page.goto(f"http://127.0.0.1:{server.port}/?token={TOKEN}&window=5m")
            page.wait_for_function(STATUS_LIVE, timeout=15_000)
            page.evaluate("window.__sameDocument = true")
            assert page.evaluate("window.lockwatch.lastId") == 7

            kill9(server)
            page.wait_for_function(
                "() => !document.getElementById('lw-status').textContent.startsWith('live')",
                timeout=10_000,
            )
            down_ids = write_elsewhere(server.store, 4, DOWN_SITE)
            server.start()
            server.wait_ready()

            # The page's own retry loop reconnects, says hello with its last id, and
            # the catch-up batch brings what was written while the server was down.
            page.wait_for_function(
                f"() => window.lockwatch.lastId === {down_ids[-1]}", timeout=20_000
            )
            catch_ups = [f for f in frames if f.get("catch_up")]
            assert len(catch_ups) == 1
            assert (catch_ups[0]["first_id"], catch_ups[0]["count"]) == (8, len(down_ids))
            for event_id in down_ids:
                page.wait_for_selector(f'#lw-feed li[data-id="{event_id}"]', timeout=10_000)
            page.wait_for_function(
                "(site) => document.getElementById('events-table').textContent.includes(site)",
                arg=DOWN_SITE,
                timeout=10_000,
            )
            assert page.evaluate("window.__sameDocument") is True  # no reload
            page.wait_for_function(STATUS_LIVE, timeout=5_000)
            assert page.locator("#lw-banner").is_hidden()  # nothing left saying it is down
            assert errors == []
        finally:
            browser.close()
