"""A real gunicorn with several workers: one store, one live channel, blockers across workers."""

from __future__ import annotations

import asyncio
import http.client
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import ROOT, free_port, line_of
from tests.support.layers import collect, redis_env, redis_layer

VIEWS = ROOT / "tests" / "project" / "shop" / "views.py"


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_gunicorn_workers_share_one_store_and_channel(lw, tmp_path: Path, redis):
    env = {**redis_env(lw, tmp_path, redis), "LOCKWATCH_TEST_TIMEOUT": "0.2"}
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "3", "-b", f"127.0.0.1:{port}",
         "--graceful-timeout", "2", "tests.project.wsgi:application"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                _get(port, "/write/")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)

        statuses: list[int] = []

        def load():
            for _ in range(4):
                holders = [
                    threading.Thread(target=lambda: statuses.append(_get(port, "/hold/?s=0.6")))
                ]
                writers = [
                    threading.Thread(target=lambda: statuses.append(_get(port, "/write/")))
                    for _ in range(3)
                ]
                holders[0].start()
                time.sleep(0.15)
                for t in writers:
                    t.start()
                for t in holders + writers:
                    t.join()

        async def go():
            listening = asyncio.create_task(collect(redis_layer(redis.url), 8.0))
            await asyncio.sleep(0.3)
            await asyncio.to_thread(load)
            return await listening

        messages = asyncio.run(go())
    finally:
        server.terminate()
        server.wait(20)

    assert 500 in statuses and 200 in statuses
    lw.settle()
    busy = lw.events(kind="busy")
    assert busy, "writers timed out behind a holding worker"
    hold_line = line_of(VIEWS, "HOLD-VIEW-LINE")
    crossed = [
        b for b in busy
        if b["blocker_pid"] not in (None, b["pid"])
        and b["blocker_call_site"] == f"tests/project/shop/views.py:{hold_line} in hold"
        and b["blocker_context"] == "request:GET /hold/"
    ]  # fmt: skip
    assert crossed, "a busy error in one worker names the holding worker"
    pids = {r["pid"] for r in lw.rows("SELECT DISTINCT pid FROM events WHERE kind = 'request'")}
    assert len(pids) >= 2, "several workers wrote to the one store"
    live_pids = {e["pid"] for m in messages for e in m["events"]}
    assert len(live_pids) >= 2, "several workers published to the one live channel"
