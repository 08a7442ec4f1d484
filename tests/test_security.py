"""Who gets in: every dashboard URL and the websocket, standalone and mounted; CSRF; the bind.

The matrix is built from lockwatch/urls.py, so a new URL fails
``test_every_url_is_in_the_matrix`` until it is added here. Message texts for
single cells are checked in test_dashboard_views.py and test_dashboard_consumers.py.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import sys
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.signed_cookies import SessionStore
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import resolve

from lockwatch import urls
from lockwatch.dashboard import auth
from tests.test_browser import TOKEN as SERVE_TOKEN
from tests.test_browser import Server
from tests.test_dashboard_consumers import HOST, LAYERS, ORIGIN, application
from tests.test_dashboard_support import TOKEN, story
from tests.test_dashboard_views import server_settings

# Each route by name, as a path under the dashboard's mount point.
GET = {
    "index": "",
    "event": "events/1/",
    "export": "export.csv",
    "header": "partials/header/",
    "chart": "partials/chart/busy/",
    "slowest": "partials/slowest/",
    "callsites": "partials/callsites/",
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
    with server_settings(standalone_store, CHANNEL_LAYERS=LAYERS, ALLOWED_HOSTS=["127.0.0.1"]):
        yield standalone_store


def session_cookie() -> str:
    """A real login's signed session cookie."""
    c = Client()
    assert c.get(f"/?token={TOKEN}").status_code == 302
    return c.cookies["lockwatch_session"].value


def flipped_signature() -> str:
    value = session_cookie()
    return value[:-1] + ("A" if value[-1] != "A" else "B")


def signed_elsewhere() -> str:
    # The right content, signed by a server with another secret key.
    with override_settings(SECRET_KEY="another-server"):
        session = SessionStore()
        session[auth.SESSION_KEY] = auth.digest(TOKEN)
        session.save()
        return session.session_key or ""


def unsigned() -> str:
    return session_cookie().rsplit(":", 1)[0]


# name -> (query string, Authorization header or None, session cookie maker or None)
Credential = tuple[str, str | None, Callable[[], str] | None]
REFUSED: dict[str, Credential] = {
    "nothing": ("", None, None),
    "wrong token in the URL": ("token=wrong", None, None),
    "empty token in the URL": ("token=", None, None),
    "wrong token header": ("", "Token wrong", None),
    "right token, wrong scheme": ("", f"Bearer {TOKEN}", None),
    "token header without a token": ("", "Token ", None),
    "session with a flipped signature": ("", None, flipped_signature),
    "session signed by another server": ("", None, signed_elsewhere),
    "session without its signature": ("", None, unsigned),
    "garbage session": ("", None, lambda: "not-a-session"),
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
