"""Who gets in: every dashboard URL and the websocket, standalone and mounted; CSRF; the bind.

The matrix is built from lockwatch/urls.py, so a new URL fails
``test_every_url_is_in_the_matrix`` until it is added here. Message texts for
single cells are checked in test_dashboard_views.py and test_dashboard_consumers.py.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import html
import os
import re
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.file import SessionStore
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import resolve

from lockwatch import urls
from lockwatch.dashboard import auth
from tests.support.dashboard import HOST, LAYERS, ORIGIN, TOKEN, application, server_settings, story
from tests.support.servers import TOKEN as SERVE_TOKEN
from tests.support.servers import Server

# Each route by name, as a path under the dashboard's mount point.
GET = {
    "index": "",
    "event": "events/1/",
    "export": "export.csv",
    "header": "partials/header/",
    "chart": "partials/chart/busy/",
    "slowest": "partials/slowest/",
    "callsites": "partials/callsites/",
    "endpoints": "partials/endpoints/",
    "event-request": "events/7/request/",  # the story's request
    "request": "requests/story-request/",
    "doctor": "partials/doctor/",
    "events": "partials/events/",
}
POST = {"login": "login/", "logout": "logout/"}
WS = "ws"  # the websocket, as one more target
TARGETS = [*GET, WS]


def test_every_url_is_in_the_matrix():
    assert {p.name for p in urls.urlpatterns} == GET.keys() | POST.keys()
    for name, path in {**GET, **POST}.items():
        assert resolve(f"/{path}", urlconf="lockwatch.server.urls").url_name == name


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def ws_outcome(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> str:
    """'hello' if the socket is served; 'refused' if it gets a fatal error and a 4403 close."""
    comm = WebsocketCommunicator(app, path, headers=[HOST, ORIGIN, *headers])
    connected, _ = await comm.connect()
    assert connected  # accepted first, so the refusal can say why
    try:
        frame = await comm.receive_json_from(timeout=5)
        if frame["type"] == "hello":
            return "hello"
        assert frame["type"] == "error" and frame["fatal"] is True, frame
        closed = await comm.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": 4403}, closed
        return "refused"
    finally:
        await comm.disconnect()


# -- standalone: the token -------------------------------------------------------------


@pytest.fixture(scope="module")
def standalone_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("standalone") / "lockwatch.sqlite3"
    story(path)
    return path


@pytest.fixture
def standalone(standalone_store: Path) -> Iterator[Path]:
    # Per test: the token setting must not leak into the mounted tests below.
    auth.THROTTLE.clear()
    with server_settings(standalone_store, CHANNEL_LAYERS=LAYERS, ALLOWED_HOSTS=["127.0.0.1"]):
        yield standalone_store


def session_cookie() -> str:
    """A real login's session cookie."""
    c = Client()
    assert c.get(f"/?token={TOKEN}").status_code == 302
    return c.cookies["lockwatch_session"].value


def flipped_key() -> str:
    value = session_cookie()
    return value[:-1] + ("a" if value[-1] != "a" else "b")


def logged_out() -> str:
    """The cookie of a login that has since logged out."""
    c = Client()
    assert c.get(f"/?token={TOKEN}").status_code == 302
    value = c.cookies["lockwatch_session"].value
    assert c.post("/logout/").status_code == 302
    return value


def holding_the_token_digest() -> str:
    # A session that holds what the cookie used to carry: a plain sha256 of the token.
    session = SessionStore()
    session[auth.SESSION_KEY] = hashlib.sha256(f"lockwatch-dashboard:{TOKEN}".encode()).hexdigest()
    session.save()
    return session.session_key or ""


# name -> (query string, Authorization header or None, session cookie maker or None)
Credential = tuple[str, str | None, Callable[[], str] | None]
REFUSED: dict[str, Credential] = {
    "nothing": ("", None, None),
    "wrong token in the URL": ("token=wrong", None, None),
    "empty token in the URL": ("token=", None, None),
    "wrong token header": ("", "Token wrong", None),
    "right token, wrong scheme": ("", f"Bearer {TOKEN}", None),
    "token header without a token": ("", "Token ", None),
    "session key with a flipped character": ("", None, flipped_key),
    "session of a login that logged out": ("", None, logged_out),
    "session holding a digest of the token": ("", None, holding_the_token_digest),
    "garbage session": ("", None, lambda: "not-a-session"),
    "made-up session key": ("", None, lambda: "0123456789abcdefghijklmnopqrstuv"),
}
ALLOWED: dict[str, Credential] = {
    "session": ("", None, session_cookie),
    "token header": ("", f"Token {TOKEN}", None),
}


def standalone_outcome(target: str, credential: Credential) -> str:
    query, header, cookie = credential
    cookie_value = cookie() if cookie else None
    if target == WS:
        headers = []
        if header is not None:
            headers.append((b"authorization", header.encode()))
        if cookie_value is not None:
            headers.append((b"cookie", f"lockwatch_session={cookie_value}".encode()))
        path = f"/ws/?{query}" if query else "/ws/"
        return run(ws_outcome(application(), path, headers))
    c = Client()
    if cookie_value is not None:
        c.cookies["lockwatch_session"] = cookie_value
    extra = {"HTTP_AUTHORIZATION": header} if header is not None else {}
    response = c.get(f"/{GET[target]}" + (f"?{query}" if query else ""), **extra)
    return str(response.status_code)


@pytest.mark.parametrize("credential", REFUSED)
@pytest.mark.parametrize("target", TARGETS)
def test_standalone_refuses(standalone, target, credential):
    expected = "refused" if target == WS else "403"
    assert standalone_outcome(target, REFUSED[credential]) == expected


@pytest.mark.parametrize("credential", ALLOWED)
@pytest.mark.parametrize("target", TARGETS)
def test_standalone_admits(standalone, target, credential):
    expected = "hello" if target == WS else "200"
    assert standalone_outcome(target, ALLOWED[credential]) == expected


# -- mounted in a project: the user check ------------------------------------------------

USERS = {
    # name: (is_staff, is_superuser, is_active)
    "sec-carol": (False, False, True),
    "sec-alice": (False, False, True),
    "sec-staff": (True, False, True),
    "sec-gone": (True, False, False),  # staff, but deactivated
    "sec-root": (True, True, True),
}


def only_alice(user: Any) -> bool:
    return getattr(user, "username", "") == "sec-alice"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The test project (tests/project) with its real sessions and users, and a store."""
    from django.contrib.auth.models import User

    call_command("migrate", verbosity=0)
    User.objects.filter(username__in=USERS).delete()
    for name, (staff, superuser, active) in USERS.items():
        User.objects.create_user(
            name, password="x", is_staff=staff, is_superuser=superuser, is_active=active
        )
    path = tmp_path_factory.mktemp("mounted") / "lockwatch.sqlite3"
    story(path)
    try:
        yield path
    finally:
        User.objects.filter(username__in=USERS).delete()


def mounted_client(who: str | None, csrf: bool = False) -> Client:
    from django.contrib.auth.models import User

    c = Client(enforce_csrf_checks=csrf)
    if who is not None:
        # Deactivated users cannot log in through the form; force_login still sets a session.
        c.force_login(User.objects.get(username=who))
    return c


def mounted_ws_app() -> Any:
    # The stack the README tells a project to put in its asgi.py.
    from channels.auth import AuthMiddlewareStack
    from channels.routing import URLRouter
    from channels.security.websocket import AllowedHostsOriginValidator

    from lockwatch.dashboard.routing import websocket_urlpatterns

    return AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))


def mounted_outcome(target: str, who: str | None) -> str:
    c = mounted_client(who)
    if target == WS:
        cookie = c.cookies.get("sessionid")
        headers = [(b"cookie", f"sessionid={cookie.value}".encode())] if cookie else []
        return run(ws_outcome(mounted_ws_app(), "/lockwatch/ws/", headers))
    return str(c.get(f"/lockwatch/{GET[target]}").status_code)


DEFAULT_CHECK = "lockwatch.access.is_staff"
MOUNTED = [
    # (ACCESS_CHECK, who, allowed)
    (DEFAULT_CHECK, None, False),
    (DEFAULT_CHECK, "sec-carol", False),
    (DEFAULT_CHECK, "sec-gone", False),
    (DEFAULT_CHECK, "sec-staff", True),
    ("tests.test_security.only_alice", "sec-alice", True),
    ("tests.test_security.only_alice", "sec-staff", False),
    ("lockwatch.access.is_superuser", "sec-staff", False),
    ("lockwatch.access.is_superuser", "sec-root", True),
    ("tests.no_such_module.check", "sec-root", False),  # a broken check lets nobody in
]


@pytest.mark.parametrize(("check", "who", "allowed"), MOUNTED)
@pytest.mark.parametrize("target", TARGETS)
def test_mounted_applies_the_access_check(project, target, check, who, allowed):
    with override_settings(
        ROOT_URLCONF="tests.project.urls", CHANNEL_LAYERS=LAYERS, ALLOWED_HOSTS=["127.0.0.1"],
        LOCKWATCH={"STORE": str(project), "ENABLED": False, "ACCESS_CHECK": check},
    ):  # fmt: skip
        outcome = mounted_outcome(target, who)
    if target == WS:
        assert outcome == ("hello" if allowed else "refused")
    else:
        assert outcome == ("200" if allowed else "403")


# -- CSRF: every route refuses a POST without a token ------------------------------------


@pytest.mark.parametrize("name", [*GET, *POST])
def test_standalone_post_without_csrf_is_refused(standalone, name):
    c = Client(enforce_csrf_checks=True)
    assert c.get(f"/?token={TOKEN}").status_code == 302  # logged in: only CSRF can refuse
    response = c.post(f"/{({**GET, **POST})[name]}", {"token": TOKEN})
    assert response.status_code == 403
    assert b"CSRF verification failed" in response.content


def test_a_refused_logout_leaves_the_session_alone(standalone):
    c = Client(enforce_csrf_checks=True)
    c.get(f"/?token={TOKEN}")
    assert c.post("/logout/").status_code == 403
    assert c.get("/partials/header/").status_code == 200


@pytest.mark.parametrize("name", POST)
def test_mounted_post_without_csrf_is_refused(project, name):
    # The test project has no CsrfViewMiddleware: the views protect themselves.
    with override_settings(
        ROOT_URLCONF="tests.project.urls", LOCKWATCH={"STORE": str(project), "ENABLED": False}
    ):
        c = mounted_client("sec-staff", csrf=True)
        response = c.post(f"/lockwatch/{POST[name]}", {"token": "x"})
    assert response.status_code == 403
    assert b"CSRF verification failed" in response.content


# -- the real server: its bind address, settings and static files ------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`lockwatch serve` without --host, as a user starts it."""
    with Server.with_story(tmp_path_factory.mktemp("serve")) as server:
        yield server


def listeners(port: int) -> list[str]:
    """Addresses listening on port, from /proc/net/tcp and tcp6 (in the kernel's hex)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.append(address)
    return found


LOOPBACK = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it (little-endian)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/net/tcp")
def test_serve_listens_on_127_0_0_1_only(served):
    assert listeners(served.port) == [LOOPBACK]


def other_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (SIOCGIFADDR on each interface)."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address on it
            address = socket.inet_ntoa(packed[20:24])
            if not address.startswith("127."):
                found.append(address)
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="reads interface addresses with ioctl")
def test_serve_is_not_reachable_on_other_addresses(served):
    addresses = other_addresses()
    if not addresses:
        pytest.skip("this machine has no non-loopback address (the /proc check covers it)")
    socket.create_connection(("127.0.0.1", served.port), timeout=2).close()
    for address in addresses:
        with pytest.raises(OSError):
            socket.create_connection((address, served.port), timeout=2).close()


def raw(server: Server, method: str, path: str, **headers: str) -> tuple[int, bytes]:
    # http.client sends the path as written: no normalising of "..".
    conn = HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("name", POST)
def test_serve_refuses_a_post_without_csrf(served, name):
    status, body = raw(served, "POST", f"/{POST[name]}", Authorization=f"Token {SERVE_TOKEN}")
    assert status == 403 and b"CSRF verification failed" in body


@pytest.mark.parametrize("path", [f"/{p}" for p in GET.values()])
def test_serve_refuses_without_the_token(served, path):
    assert raw(served, "GET", path)[0] == 403


TRAVERSALS = [
    "/static/../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/lockwatch/..%2f..%2f..%2fserver%2fsettings.py",
    "/static/lockwatch/../../server/settings.py",
    "/static/..%5c..%5cetc/passwd",
    "/static//etc/passwd",
    "/static/lockwatch/%00",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/events/..%2f..%2fetc%2fpasswd/",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_serve_path_traversal_is_404(served, path):
    status, body = raw(served, "GET", path, Authorization=f"Token {SERVE_TOKEN}")
    assert status == 404
    assert b"root:" not in body and b"SECRET_KEY" not in body


def test_serve_still_serves_its_static_files(served):
    status, body = raw(served, "GET", "/static/lockwatch/lockwatch.js")
    assert status == 200 and b"lockwatch dashboard" in body


class EverywhereServer(Server):
    def command(self) -> list[str]:
        return [*super().command(), "--host", "0.0.0.0"]


@pytest.mark.skipif(sys.platform != "linux", reason="reads interface addresses with ioctl")
def test_serve_on_all_addresses_still_needs_the_token(tmp_path):
    addresses = other_addresses()
    if not addresses:
        pytest.skip("this machine has no non-loopback address to connect from")
    with EverywhereServer.with_story(tmp_path) as server:
        conn = HTTPConnection(addresses[0], server.port, timeout=10)
        conn.request("GET", "/partials/header/")
        response = conn.getresponse()
        assert response.status == 403
        assert response.read().startswith(b"lockwatch: not logged in")
        conn.close()


# -- the websocket takes only the dashboard's own origin: scheme, host and port ------------
# Browsers send a host's cookies to every port of it, so a page of the watched app, or of
# any dev server on another port, could open the socket as the logged-in user.


def ws_result(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> str:
    """'hello', 'refused' (a fatal error frame) or 'rejected' (the handshake itself)."""

    async def go() -> str:
        comm = WebsocketCommunicator(app, path, headers=headers)
        connected, _ = await comm.connect()
        if not connected:
            return "rejected"
        try:
            frame = await comm.receive_json_from(timeout=5)
            return "hello" if frame["type"] == "hello" else "refused"
        finally:
            await comm.disconnect()

    return run(go())


ORIGINS = [
    # (Host header the browser used, Origin it sent, outcome)
    (b"127.0.0.1:8000", b"http://127.0.0.1:8000", "hello"),
    (b"127.0.0.1", b"http://127.0.0.1", "hello"),
    (b"127.0.0.1:8000", b"http://127.0.0.1:8001", "rejected"),  # another app on this host
    (b"127.0.0.1:8000", b"http://127.0.0.1:3000", "rejected"),
    (b"127.0.0.1:8000", b"http://127.0.0.1", "rejected"),
    (b"127.0.0.1", b"http://127.0.0.1:8000", "rejected"),
    (b"127.0.0.1:8000", b"https://127.0.0.1:8000", "rejected"),  # another scheme
    (b"127.0.0.1:8000", b"null", "rejected"),
    (b"127.0.0.1:8000", None, "rejected"),
]


@pytest.mark.parametrize(("host", "origin", "outcome"), ORIGINS)
def test_standalone_websocket_takes_only_its_own_origin(standalone, host, origin, outcome):
    headers = [(b"host", host), (b"authorization", f"Token {TOKEN}".encode())]
    if origin is not None:
        headers.append((b"origin", origin))
    assert ws_result(application(), "/ws/", headers) == outcome


@pytest.mark.parametrize(
    ("origin", "trusted", "outcome"),
    [
        (b"http://127.0.0.1:8000", [], "hello"),
        (b"http://127.0.0.1:3000", [], "rejected"),
        (b"http://127.0.0.1:3000", ["http://127.0.0.1:3000"], "hello"),
        (b"https://app.example.com", ["https://*.example.com"], "hello"),
        (b"http://app.example.com", ["https://*.example.com"], "rejected"),
    ],
)
def test_mounted_websocket_takes_only_its_own_origin(project, origin, trusted, outcome):
    # The stack the README shows, whose AllowedHostsOriginValidator ignores ports:
    # lockwatch's consumer applies the rule itself, unless the project trusts the origin.
    with override_settings(
        ROOT_URLCONF="tests.project.urls", CHANNEL_LAYERS=LAYERS, ALLOWED_HOSTS=["*"],
        CSRF_TRUSTED_ORIGINS=trusted, LOCKWATCH={"STORE": str(project), "ENABLED": False},
    ):  # fmt: skip
        cookie = mounted_client("sec-staff").cookies["sessionid"].value
        headers = [
            (b"host", b"127.0.0.1:8000"),
            (b"origin", origin),
            (b"cookie", f"sessionid={cookie}".encode()),
        ]
        assert ws_result(mounted_ws_app(), "/lockwatch/ws/", headers) == outcome


def handshake(
    port: int, host: str, origin: str | None, address: str = "127.0.0.1", **headers: str
) -> int:
    """The HTTP status of a websocket handshake to a real server (101: accepted)."""
    lines = [
        "GET /ws/ HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13", f"Authorization: Token {SERVE_TOKEN}",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
    ]  # fmt: skip
    if origin is not None:
        lines.append(f"Origin: {origin}")
    with socket.create_connection((address, port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split()[1])


def test_serve_websocket_refuses_other_ports_of_its_host(served):
    own = f"127.0.0.1:{served.port}"
    assert handshake(served.port, own, f"http://{own}") == 101
    assert handshake(served.port, own, f"http://127.0.0.1:{served.port + 1}") == 403
    assert handshake(served.port, own, "http://localhost:3000") == 403
    assert handshake(served.port, own, None) == 403


@pytest.mark.skipif(sys.platform != "linux", reason="reads interface addresses with ioctl")
def test_serve_on_all_addresses_takes_the_origin_of_the_host_used(tmp_path):
    addresses = other_addresses() or ["127.0.0.1"]
    with EverywhereServer.with_story(tmp_path) as server:
        for address in {addresses[0], "127.0.0.1"}:
            used = f"{address}:{server.port}"
            assert handshake(server.port, used, f"http://{used}", address) == 101
            assert handshake(server.port, used, f"http://{address}:1", address) == 403
            assert handshake(server.port, used, f"http://{address}", address) == 403
            # A page of another site (DNS rebinding names the host it asked for).
            assert handshake(server.port, used, "http://evil.example", address) == 403


# -- the token: never echoed, never logged, not guessable from the cookie, throttled --------


def next_field(body: str) -> str:
    return html.unescape(re.search(r'name="next" value="([^"]*)"', body).group(1))


def test_a_wrong_token_is_not_echoed_back(standalone):
    response = Client().get("/?window=5m&token=guess-4242-secret")
    assert response.status_code == 403
    body = response.content.decode()
    assert "guess-4242" not in body
    assert next_field(body) == "/?window=5m"


def test_a_stale_token_url_logs_in_without_a_loop(standalone):
    c = Client(HTTP_HOST="127.0.0.1")
    page = c.get("/?window=1h&token=the-token-of-last-week")
    assert page.status_code == 403
    response = c.post("/login/", {"token": TOKEN, "next": next_field(page.content.decode())})
    assert response.status_code == 302 and response["Location"] == "/?window=1h"
    assert c.get(response["Location"]).status_code == 200
    # A login form from an older page may still carry it in next: it is dropped there too.
    response = Client(HTTP_HOST="127.0.0.1").post(
        "/login/", {"token": TOKEN, "next": "/?token=old&window=24h"}
    )
    assert response["Location"] == "/?window=24h"


def test_logout_revokes_the_session_everywhere(standalone):
    c = Client()
    assert c.get(f"/?token={TOKEN}").status_code == 302
    captured = c.cookies["lockwatch_session"].value
    assert c.post("/logout/").status_code == 302
    thief = Client()
    thief.cookies["lockwatch_session"] = captured
    assert thief.get("/partials/header/").status_code == 403
    assert thief.get("/").status_code == 403


def test_logout_closes_an_open_websocket(standalone):
    c = Client()
    assert c.get(f"/?token={TOKEN}").status_code == 302
    cookie = (b"cookie", f"lockwatch_session={c.cookies['lockwatch_session'].value}".encode())

    async def go() -> None:
        comm = WebsocketCommunicator(application(), "/ws/", headers=[HOST, ORIGIN, cookie])
        connected, _ = await comm.connect()
        assert connected
        try:
            assert (await comm.receive_json_from(timeout=5))["type"] == "hello"
            assert (await asyncio.to_thread(c.post, "/logout/")).status_code == 302
            frame = await comm.receive_json_from(timeout=10)
            assert frame["type"] == "error" and frame["fatal"] is True
            assert "logged out" in frame["message"]
            closed = await comm.receive_output(timeout=5)
            assert closed == {"type": "websocket.close", "code": 4403}
        finally:
            await comm.disconnect()

    run(go())


def test_throttles_wrong_tokens_per_client(standalone):
    c = Client(HTTP_HOST="127.0.0.1")
    statuses = [c.get(f"/?token=guess-{n}").status_code for n in range(300)]
    first = statuses.index(429)
    assert 3 <= first <= 20 and set(statuses[:first]) == {403}
    assert set(statuses[first:]) == {429}
    # While it lasts, even the right token is not looked at, however it comes.
    assert c.get(f"/?token={TOKEN}").status_code == 429
    assert c.post("/login/", {"token": TOKEN}).status_code == 429
    assert c.get("/partials/header/", HTTP_AUTHORIZATION=f"Token {TOKEN}").status_code == 429
    assert b"try again in" in c.get(f"/partials/header/?token={TOKEN}",
                                    HTTP_AUTHORIZATION="Token x").content  # fmt: skip
    # Another client is not held up by it.
    assert Client(REMOTE_ADDR="192.0.2.7").get(f"/?token={TOKEN}").status_code == 302


def test_the_websocket_counts_wrong_tokens_too(standalone):
    for n in range(30):
        headers = [HOST, ORIGIN, (b"authorization", f"Token guess-{n}".encode())]
        ws_result(application(), "/ws/", headers)

    async def go() -> dict:
        headers = [HOST, ORIGIN, (b"authorization", f"Token {TOKEN}".encode())]
        comm = WebsocketCommunicator(application(), "/ws/", headers=headers)
        await comm.connect()
        try:
            return await comm.receive_json_from(timeout=5)
        finally:
            await comm.disconnect()

    frame = run(go())
    assert frame["type"] == "error" and "too many wrong tokens" in frame["message"]


def test_the_throttle_is_bounded():
    throttle = auth.Throttle()
    for n in range(throttle.max_clients * 3):
        throttle.failed(f"198.51.{n // 256}.{n % 256}")
    assert len(throttle) <= throttle.max_clients


def test_the_session_cookie_is_a_random_key_not_a_digest(served):
    def login() -> str:
        conn = HTTPConnection("127.0.0.1", served.port, timeout=10)
        try:
            conn.request("GET", f"/?token={SERVE_TOKEN}")
            response = conn.getresponse()
            response.read()
            assert response.status == 302
            return (response.getheader("Set-Cookie") or "").split(";", 1)[0]
        finally:
            conn.close()

    first, second = login(), login()
    name, value = first.split("=", 1)
    assert name == "lockwatch_session"
    # A random session key whose data stays on the server: nothing in it to test guesses on.
    assert re.fullmatch(r"[a-z0-9]{32}", value), value
    assert second.split("=", 1)[1] != value


def test_serve_logout_revokes_a_captured_cookie(served):
    own = f"127.0.0.1:{served.port}"
    status, headers, _ = request(served, "GET", f"/?token={SERVE_TOKEN}", Host=own)
    assert status == 302
    session = cookies(headers)["lockwatch_session"].split(";", 1)[0]
    status, headers, body = request(served, "GET", "/", Host=own, Cookie=session)
    assert status == 200 and get_header(served, "/partials/header/", session) == 200
    csrf = cookies(headers)["lockwatch_csrftoken"].split(";", 1)[0]
    form = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1)
    status, _, _ = request(
        served, "POST", "/logout/", body=f"csrfmiddlewaretoken={form}", Host=own,
        Content_Type="application/x-www-form-urlencoded", Cookie=f"{session}; {csrf}",
        Origin=f"http://{own}",
    )  # fmt: skip
    assert status == 302
    # Whoever copied the cookie before the logout is out too.
    assert get_header(served, "/partials/header/", session) == 403


def get_header(server: Server, path: str, cookie: str) -> int:
    return request(server, "GET", path, Host=f"127.0.0.1:{server.port}", Cookie=cookie)[0]


def test_serve_logs_no_token(served):
    raw(served, "GET", f"/?token={SERVE_TOKEN}&window=5m")
    raw(served, "GET", "/?window=1h&token=a-wrong-guess-7731")
    raw(served, "GET", f"/partials/header/?token={SERVE_TOKEN}")
    handshake(served.port, f"127.0.0.1:{served.port}", f"http://127.0.0.1:{served.port}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = served.log.read_text(errors="replace")
        if "a-wrong-guess" in log or '"GET /?window=1h&token=[redacted]' in log:
            break
        time.sleep(0.1)
    access = [line for line in log.splitlines() if '"GET ' in line or '"WS' in line]
    assert any("token=[redacted]" in line for line in access), log
    assert [line for line in access if SERVE_TOKEN in line or "a-wrong-guess" in line] == []


# -- behind an HTTPS proxy -----------------------------------------------------------------


class ProxiedServer(Server):
    def command(self) -> list[str]:
        return [*super().command(), "--proxy-headers", "--public-url",
                "https://lockwatch.example.com"]  # fmt: skip


def request(
    server: Server, method: str, path: str, body: str | None = None, **headers: str
) -> tuple[int, list[tuple[str, str]], str]:
    conn = HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={k.replace("_", "-"): v
                                                      for k, v in headers.items()})  # fmt: skip
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read().decode()
    finally:
        conn.close()


def cookies(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Set-Cookie headers by cookie name: the whole header, attributes included."""
    return {v.split("=", 1)[0]: v for k, v in headers if k.lower() == "set-cookie"}


def test_behind_an_https_proxy_cookies_are_secure_and_login_works(tmp_path):
    with ProxiedServer.with_story(tmp_path) as server:
        # A proxy that passes the Host on, and one that does not (then --public-url says it).
        for host in ("lockwatch.example.com", f"127.0.0.1:{server.port}"):
            https = {"Host": host, "X_Forwarded_Proto": "https", "X_Forwarded_For": "203.0.113.9"}
            status, headers, body = request(server, "GET", "/", **https)
            assert status == 403  # the login page
            csrf = cookies(headers)["lockwatch_csrftoken"]
            assert "Secure" in csrf
            form = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1)
            status, headers, _ = request(
                server, "POST", "/login/",
                body=f"csrfmiddlewaretoken={form}&token={SERVE_TOKEN}&next=/",
                Content_Type="application/x-www-form-urlencoded",
                Cookie=csrf.split(";", 1)[0], Origin="https://lockwatch.example.com", **https,
            )  # fmt: skip
            assert status == 302, headers
            assert "Secure" in cookies(headers)["lockwatch_session"]
            # The page's websocket, from the public origin; not from another one.
            for origin, expected in (("https://lockwatch.example.com", 101),
                                     ("https://elsewhere.example.com", 403),
                                     ("http://lockwatch.example.com", 403)):  # fmt: skip
                assert handshake(server.port, host, origin, X_Forwarded_Proto="https") == expected
        # Without the proxy's word, a plain-HTTP request gets no Secure cookie.
        status, headers, _ = request(server, "GET", "/", Host=f"127.0.0.1:{server.port}")
        assert status == 403 and "Secure" not in cookies(headers)["lockwatch_csrftoken"]
