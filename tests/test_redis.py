"""Live batches through a real redis-server, and what happens when it goes away."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time

from lockwatch import live
from tests.conftest import ROOT
from tests.support.layers import collect, redis_env, redis_layer

MANAGE = ROOT / "tests" / "project" / "manage.py"


def test_target_batches_arrive_through_redis(lw, tmp_path, redis):
    env = redis_env(lw, tmp_path, redis)

    async def go():
        def both_seen(got: list[dict]) -> bool:
            kinds = {e["kind"] for m in got for e in m["events"]}
            return "busy" in kinds

        listening = asyncio.create_task(collect(redis_layer(redis.url), 30.0, both_seen))
        await asyncio.sleep(0.5)
        ready = tmp_path / "ready"
        holder = subprocess.Popen(
            # Long enough for the waiter's Django to start on a loaded machine.
            [sys.executable, str(MANAGE), "hold_lock", "--seconds", "4.0",
             "--ready-file", str(ready)], cwd=ROOT, env=env,
        )  # fmt: skip
        while not ready.exists():
            await asyncio.sleep(0.01)
        waiter = await asyncio.create_subprocess_exec(
            sys.executable, str(MANAGE), "write_one", cwd=ROOT,
            env={**env, "LOCKWATCH_TEST_TIMEOUT": "0.3"},
        )  # fmt: skip
        await waiter.wait()
        holder.wait(20)
        return await listening, holder.pid, waiter.pid

    messages, holder_pid, waiter_pid = asyncio.run(go())
    assert messages, "no batch came through Redis"
    assert all(m["type"] == live.MESSAGE_TYPE for m in messages)
    busy = [e for m in messages for e in m["events"] if e["kind"] == "busy"]
    assert [b["pid"] for b in busy] == [waiter_pid]
    assert busy[0]["classification"] == "timeout"
    # The holder's only event is its transaction, published as it exits; that last
    # publish is not guaranteed (see the closing note), but the store always has it.
    conn_ = sqlite3.connect(lw.store)
    assert (
        conn_.execute(
            "SELECT count(*) FROM events WHERE kind = 'transaction' AND pid = ?", (holder_pid,)
        ).fetchone()[0]
        == 1
    )
    # The ids are the store's, so the dashboard can tell them from the tail's.
    conn = sqlite3.connect(lw.store)
    (stored,) = conn.execute("SELECT id FROM events WHERE kind = 'busy'").fetchone()
    assert busy[0]["id"] == stored
    (missed,) = conn.execute("SELECT sum(live_missed) FROM processes").fetchone()
    assert missed == 0


def test_redis_down_and_back(lw, tmp_path, redis):
    env = redis_env(lw, tmp_path, redis)
    progress = tmp_path / "progress"

    def written() -> int:
        try:
            return int(progress.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    async def go():
        layer = redis_layer(redis.url)
        writer = await asyncio.create_subprocess_exec(
            sys.executable, str(MANAGE), "write_many", "--seconds", "6", "--interval", "0.02",
            "--progress-file", str(progress), cwd=ROOT, env=env, stdout=subprocess.PIPE,
        )  # fmt: skip
        before = await collect(layer, 1.5)
        # On a loaded machine the writer may still be starting: kill Redis mid-writes.
        for _ in range(100):
            if written() > 0:
                break
            await asyncio.sleep(0.1)
        redis.kill()
        down_from = written()
        await asyncio.sleep(1.5)
        down_to = written()
        redis.start()
        after = await collect(redis_layer(redis.url), 2.0)
        out, _ = await writer.communicate()
        return before, down_from, down_to, after, out.decode()

    before, down_from, down_to, after, out = asyncio.run(go())
    assert before and after, "batches flow before Redis dies and again after it is back"
    assert down_to - down_from > 10, "the app kept serving while Redis was down"
    assert out.strip().endswith("failed=0")
    ok = int(out.split("ok=")[1].split()[0])
    conn = sqlite3.connect(lw.store)
    stored = conn.execute(
        "SELECT count(*) FROM events WHERE kind = 'query' AND sql LIKE 'INSERT%'"
        " AND context = 'command:write_many'"
    ).fetchone()[0]
    assert stored == ok  # every event still reached the store
    (missed,) = conn.execute(
        "SELECT sum(live_missed) FROM processes WHERE program = 'command:write_many'"
    ).fetchone()
    assert missed > 0  # and the ones that missed the live path are counted
    assert missed < ok


def test_dashboard_websocket_gets_target_batches_through_redis(lw, tmp_path, redis):
    from tests.support.dashboard import AUTH, communicator, receive_type, server_settings

    env = redis_env(lw, tmp_path, redis)
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis.url]},
        }
    }

    async def go():
        comm = communicator(AUTH)
        connected, _ = await comm.connect()
        assert connected
        await receive_type(comm, "hello")
        writer = await asyncio.create_subprocess_exec(
            sys.executable, str(MANAGE), "write_many", "--seconds", "1", cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            frame = await receive_type(comm, "batch", timeout=10)
            if "missed_before" in frame:  # only the target's publisher sets it
                break
        else:
            raise AssertionError("no batch came from the target through Redis")
        await writer.wait()
        await comm.disconnect()
        return frame

    with server_settings(lw.store, CHANNEL_LAYERS=layers, ALLOWED_HOSTS=["127.0.0.1"]):
        frame = asyncio.run(go())
    assert frame["count"] > 0
    assert frame["kinds"].get("query", 0) > 0
