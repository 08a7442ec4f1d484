"""The websocket, through the real ASGI application, with channels' WebsocketCommunicator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client, override_settings

from lockwatch import live
from lockwatch.dashboard import auth, relay
from lockwatch.dashboard.consumers import LiveConsumer
from tests.support.dashboard import (
    AUTH,
    HOLDER,
    HOST,
    LAYERS,
    ORIGIN,
    TOKEN,
    application,
    communicator,
    insert,
    receive,
    receive_type,
    server_settings,
    story,
)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "lockwatch.sqlite3"
    story(path)
    return path


@pytest.fixture
def server(store_path: Path) -> Iterator[Path]:
    auth.THROTTLE.clear()
    with server_settings(store_path, CHANNEL_LAYERS=LAYERS, ALLOWED_HOSTS=["127.0.0.1"]):
        yield store_path


def run(coro) -> Any:
    return asyncio.run(coro)


# -- access ------------------------------------------------------------------------


def test_refused_without_credentials(server):
    async def go():
        comm = communicator()
        connected, _ = await comm.connect()
        assert connected
        frame = await receive(comm)
        assert frame["type"] == "error" and frame["fatal"] is True
        assert frame["message"].startswith("not logged in")
        closed = await comm.receive_output(timeout=2)
        assert closed["type"] == "websocket.close" and closed["code"] == 4403
        await comm.disconnect()

    run(go())


def test_refused_with_a_wrong_token(server):
    async def go():
        comm = communicator((b"authorization", b"Token wrong"))
        await comm.connect()
        assert (await receive(comm))["type"] == "error"
        await comm.disconnect()

    run(go())


def test_refused_from_another_origin(server):
    async def go():
        comm = WebsocketCommunicator(
            application(), "/ws/", headers=[HOST, (b"origin", b"http://evil.example"), AUTH]
        )
        connected, _ = await comm.connect()
        assert not connected

    run(go())


def test_accepted_with_a_token_header(server):
    async def go():
        comm = communicator(AUTH)
        connected, _ = await comm.connect()
        assert connected
        hello = await receive(comm)
        assert hello["type"] == "hello"
        assert hello["last_id"] == 7
        assert "blocker_call_site" in hello["columns"]
        await comm.disconnect()

    run(go())


def test_accepted_with_the_session_cookie(server):
    c = Client()
    assert c.get(f"/?token={TOKEN}").status_code == 302  # a real login
    cookie = (b"cookie", f"lockwatch_session={c.cookies['lockwatch_session'].value}".encode())

    async def go():
        comm = communicator(cookie)
        await comm.connect()
        assert (await receive(comm))["type"] == "hello"
        await comm.disconnect()

    run(go())


def test_accepted_with_a_token_query(server):
    async def go():
        comm = communicator(path=f"/ws/?token={TOKEN}")
        await comm.connect()
        assert (await receive(comm))["type"] == "hello"
        await comm.disconnect()

    run(go())


def _mounted_app(user: Any):
    inner = LiveConsumer.as_asgi()

    async def app(scope, receive, send):
        return await inner({**scope, "user": user}, receive, send)

    return app


@pytest.mark.parametrize(
    ("who", "allowed"),
    [
        (SimpleNamespace(is_authenticated=True, is_active=True, is_staff=True), True),
        (SimpleNamespace(is_authenticated=True, is_active=True, is_staff=False), False),
        (SimpleNamespace(is_authenticated=False, is_active=False, is_staff=False), False),
        (None, False),
    ],
)
def test_mounted_uses_the_access_check(store_path, who, allowed):
    async def go():
        comm = WebsocketCommunicator(_mounted_app(who), "/lockwatch/ws/", headers=[HOST, ORIGIN])
        await comm.connect()
        frame = await receive(comm)
        assert frame["type"] == ("hello" if allowed else "error")
        await comm.disconnect()

    with override_settings(
        CHANNEL_LAYERS=LAYERS, ALLOWED_HOSTS=["127.0.0.1"], LOCKWATCH={"STORE": str(store_path)}
    ):
        run(go())


def test_mounted_without_a_channel_layer_says_so(store_path):
    staff = SimpleNamespace(is_authenticated=True, is_active=True, is_staff=True)

    async def go():
        comm = WebsocketCommunicator(_mounted_app(staff), "/lockwatch/ws/", headers=[HOST, ORIGIN])
        await comm.connect()
        frame = await receive(comm)
        assert frame["type"] == "error" and "CHANNEL_LAYERS" in frame["message"]
        await comm.disconnect()

    with override_settings(
        CHANNEL_LAYERS={}, ALLOWED_HOSTS=["127.0.0.1"], LOCKWATCH={"STORE": str(store_path)}
    ):
        run(go())


# -- batches -----------------------------------------------------------------------


def _busy(ts: float, n: int = 1) -> list[dict[str, Any]]:
    return [
        dict(ts=ts, kind="busy", classification="timeout", duration_ms=300.0, wait_ms=300.0,
             call_site="app.py:1 in f", context="command:x", pid=300, thread="MainThread")
        for _ in range(n)
    ]  # fmt: skip


def test_new_events_arrive_as_one_batch_each_sent_once(server):
    async def go():
        comm = communicator(AUTH)
        await comm.connect()
        hello = await receive(comm)
        # Stored whole, as capture stores it: the wait's blocker named as it waited.
        rows = [{**r, "blocker_call_site": HOLDER, "blocker_context": "command:holder"}
                for r in _busy(time.time())]  # fmt: skip
        (busy_id,) = await asyncio.to_thread(insert, server, rows)
        batch = await receive_type(comm, "batch")
        assert batch["first_id"] == hello["last_id"] + 1 == busy_id
        assert batch["count"] == 1
        assert batch["kinds"] == {"busy": 1}
        assert batch["busy"] == {"timeout": 1}
        (ev,) = batch["events"]
        assert ev["id"] == busy_id and ev["blocker_call_site"] == HOLDER
        # Nothing is sent again: the relay polls every 0.1 s, and the event never changes.
        assert await comm.receive_nothing(timeout=0.6)
        await comm.disconnect()

    run(go())


def test_a_burst_is_batched_and_downsampled(server):
    async def go():
        comm = communicator(AUTH)
        await comm.connect()
        await receive(comm)
        now = time.time()
        rows = _busy(now, 2000) + [
            dict(ts=now, kind="query", duration_ms=1.0, hold_ms=1.0, pid=1) for _ in range(3000)
        ]
        await asyncio.to_thread(insert, server, rows)
        total, frames = 0, 0
        while total < 5000:
            batch = await receive_type(comm, "batch")
            frames += 1
            total += batch["count"]
            assert len(batch["events"]) <= sum(live.SAMPLE.values())
        assert total == 5000
        assert frames <= 3  # never one frame per event
        await comm.disconnect()

    run(go())


def test_every_open_dashboard_gets_the_batch(server):
    async def go():
        a, b = communicator(AUTH), communicator(AUTH)
        for comm in (a, b):
            await comm.connect()
            await receive(comm)
        await asyncio.to_thread(insert, server, _busy(time.time(), 3))
        for comm in (a, b):
            assert (await receive_type(comm, "batch"))["count"] == 3
        for comm in (a, b):
            await comm.disconnect()

    run(go())


def test_pause_stops_frames_and_resume_catches_up(server):
    async def go():
        comm = communicator(AUTH)
        await comm.connect()
        hello = await receive(comm)
        await comm.send_json_to({"type": "pause"})
        await asyncio.sleep(0.1)
        await asyncio.to_thread(insert, server, _busy(time.time(), 4))
        assert await comm.receive_nothing(timeout=0.8)
        await comm.send_json_to({"type": "resume", "after": hello["last_id"]})
        batch = await receive_type(comm, "batch")
        assert batch["catch_up"] is True and batch["count"] == 4
        await comm.disconnect()

    run(go())


def test_hello_after_an_id_catches_up_from_the_store(server):
    async def go():
        comm = communicator(AUTH)
        await comm.connect()
        await receive(comm)
        await comm.send_json_to({"type": "hello", "after": 2})
        batch = await receive_type(comm, "batch")
        assert batch["catch_up"] is True
        assert batch["count"] == 5  # ids 3..7
        await comm.disconnect()

    run(go())


# -- bad frames: an error frame, and the socket lives on ------------------------------


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("not json", "frames must be JSON objects"),
        ("[1, 2]", "frames must be JSON objects"),
        ('{"type": "explode"}', "unknown frame type 'explode'"),
        ('{"kind": "hello"}', "unknown frame type None"),
        ('{"type": "hello", "after": "x"}', "after must be an event id"),
        ('{"type": "resume", "after": true}', "after must be an event id"),
        ("x" * 5000, "under 4 KB"),
    ],
)
def test_bad_frame_gets_an_error_frame(server, frame, message):
    async def go():
        comm = communicator(AUTH)
        await comm.connect()
        await receive(comm)
        await comm.send_to(text_data=frame)
        error = await receive(comm)
        assert error["type"] == "error" and error["fatal"] is False
        assert message in error["message"]
        await comm.send_json_to({"type": "ping"})
        assert (await receive(comm))["type"] == "pong"
        await comm.disconnect()

    run(go())


def test_binary_frame_gets_an_error_frame(server):
    async def go():
        comm = communicator(AUTH)
        await comm.connect()
        await receive(comm)
        await comm.send_to(bytes_data=b"\x00\x01")
        assert (await receive(comm))["type"] == "error"
        await comm.disconnect()

    run(go())


# -- the relay on its own ----------------------------------------------------------


def test_relay_starts_at_the_tail_and_follows_a_replaced_store(tmp_path):
    path = tmp_path / "s.sqlite3"
    story(path)
    r = relay.Relay(path, layer=None, group="g")
    assert r.poll() == (None, False)  # the first poll finds the tail
    assert r.last == 7
    insert(path, _busy(time.time()))
    message, more = r.poll()
    assert message["count"] == 1 and not more
    path.unlink()
    insert(path, _busy(time.time(), 2))  # a new store: ids start again
    message, _ = r.poll()
    assert message is None or message["count"] == 2
    if message is None:
        message, _ = r.poll()
        assert message["count"] == 2


def test_an_event_stored_before_a_new_relay_first_polls_is_sent(tmp_path):
    """The consumer says hello with the store's last id, then starts the relay; an
    event stored before the relay's first poll is news to that client, not history
    (seen on a loaded machine: the batch never came)."""
    path = tmp_path / "s.sqlite3"
    story(path)

    async def go() -> None:
        r = relay.subscribe(path, layer=None, prefix=None, start=7)
        try:
            (new_id,) = insert(path, _busy(time.time()))  # before the task's first poll
            message, _ = r.poll()
            assert message is not None and message["first_id"] == new_id == 8
            assert message["count"] == 1
        finally:
            relay.unsubscribe(r)

    run(go())


def test_relay_leaves_out_the_dashboards_own_requests():
    rows = [
        {"id": 1, "ts": 1.0, "kind": "request", "context": "request:GET /lockwatch/partials/x/",
         "classification": None, "hold_ms": None, "wait_ms": None},
        {"id": 2, "ts": 1.0, "kind": "request", "context": "request:GET /shop/",
         "classification": None, "hold_ms": None, "wait_ms": None},
    ]  # fmt: skip
    for row in rows:
        row.update({name: None for name in live.PAYLOAD if name not in row})
    message = relay.summarise(rows, prefix="/lockwatch/")
    assert message["count"] == 1 and message["own"] == 1


def test_relay_sends_the_first_events_of_a_store_created_after_it_started(tmp_path):
    path = tmp_path / "late.sqlite3"
    r = relay.Relay(path, layer=None, group="g")
    assert r.poll() == (None, False)  # no store yet
    insert(path, _busy(time.time(), 2))
    message, _ = r.poll()
    assert message["count"] == 2


def test_the_documented_mounted_stack_refuses_anonymous_users(store_path):
    # The routing a project adds to its asgi.py, as the README shows it.
    from channels.auth import AuthMiddlewareStack
    from channels.routing import URLRouter
    from channels.security.websocket import AllowedHostsOriginValidator

    from lockwatch.dashboard.routing import websocket_urlpatterns

    app = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))

    async def go():
        comm = WebsocketCommunicator(app, "/lockwatch/ws/", headers=[HOST, ORIGIN])
        connected, _ = await comm.connect()
        assert connected
        frame = await receive(comm)
        assert frame == {"type": "error", "fatal": True,
                         "message": "log in as a staff user to see lockwatch"}  # fmt: skip
        await comm.disconnect()

    with override_settings(
        CHANNEL_LAYERS=LAYERS, ALLOWED_HOSTS=["127.0.0.1"], LOCKWATCH={"STORE": str(store_path)},
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
    ):  # fmt: skip
        run(go())
