"""One access rule for pages, partials, the CSV export and the websocket.

Standalone (``lockwatch serve``): a token, as Jupyter does. ``?token=…`` or the
login form starts a session; an ``Authorization: Token …`` header works for
scripts. Sessions are kept on the server (Django's file backend, see
lockwatch.server.settings): the cookie is a random key, so a copied cookie tells
nothing about the token, and logging out ends the session for every copy of it.
Wrong tokens are counted per client (``THROTTLE``).

Mounted in a project: ``LOCKWATCH["ACCESS_CHECK"]`` on the user, ``is_staff`` by default.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import import_module
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.module_loading import import_string

from lockwatch.conf import get_config

TOKEN_SETTING = "LOCKWATCH_DASHBOARD_TOKEN"
SESSION_KEY = "lockwatch_login"
log = logging.getLogger("lockwatch.dashboard")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""  # one line, shown to the refused client
    status: int = 403
    session_key: str | None = None  # the session that let it in, to look at again later

    def __bool__(self) -> bool:
        return self.allowed


ALLOWED = Decision(True)


def token() -> str | None:
    return getattr(settings, TOKEN_SETTING, None) or None


def token_mode() -> bool:
    return token() is not None


def session_value(expected: str) -> str:
    """What a logged-in session holds: the token's HMAC under the server's secret key.

    It stays on the server; keyed all the same, so a copy of a session file is no
    way to test guesses of the token offline.
    """
    digest: str = salted_hmac("lockwatch.dashboard.login", expected, algorithm="sha256").hexdigest()
    return digest


def token_matches(candidate: str | None) -> bool:
    expected = token()
    if not expected or not candidate:
        return False
    same: bool = constant_time_compare(candidate, expected)
    return same


# -- wrong tokens, per client ---------------------------------------------------------


class Throttle:
    """Wrong tokens per client: past `limit` within `window` seconds, the client is
    refused without its token being looked at (the right one included) until the
    oldest of them ages out. Bounded: past `max_clients` the clients whose last wrong
    token is oldest are forgotten.
    """

    def __init__(self, limit: int = 10, window: float = 300.0, max_clients: int = 4096) -> None:
        self.limit, self.window, self.max_clients = limit, window, max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, client: str) -> float:
        """Seconds until `client` may try again (0: now)."""
        now = time.monotonic()
        with self._lock:
            times = self._failures.get(client)
            if times is None:
                return 0.0
            while times and now - times[0] >= self.window:
                times.popleft()
            if not times:
                del self._failures[client]
                return 0.0
            return self.window - (now - times[0]) if len(times) >= self.limit else 0.0

    def failed(self, client: str) -> None:
        with self._lock:
            times = self._failures.pop(client, None) or deque(maxlen=self.limit)
            times.append(time.monotonic())
            self._failures[client] = times  # now the most recent
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)

    def clear(self) -> None:
        with self._lock:
            self._failures.clear()

    def __len__(self) -> int:
        return len(self._failures)


THROTTLE = Throttle()
WRONG_TOKEN = "that token is not the one this server printed"


def check_token(candidate: str, client: str | None, wrong: str = WRONG_TOKEN) -> Decision:
    """A presented token: right, wrong (counted against the client), or not looked at."""
    key = client or "unknown"
    wait = THROTTLE.wait(key)
    if wait > 0:
        return Decision(
            False,
            f"too many wrong tokens from {key}; try again in {math.ceil(wait)} s",
            status=429,
        )
    if token_matches(candidate):
        THROTTLE.succeeded(key)
        return ALLOWED
    THROTTLE.failed(key)
    return Decision(False, wrong)


def client_of(request: HttpRequest) -> str | None:
    # REMOTE_ADDR is the proxy's behind one, unless daphne reads X-Forwarded-For
    # (lockwatch serve --proxy-headers).
    return request.META.get("REMOTE_ADDR") or None


# -- sessions ---------------------------------------------------------------------------


def _session_ok(session: Any) -> bool:
    expected = token()
    if session is None or not expected:
        return False
    try:
        value = session.get(SESSION_KEY) or ""
    except Exception:  # a session that cannot be read counts as none
        return False
    same: bool = constant_time_compare(str(value), session_value(expected))
    return same


def login(request: HttpRequest) -> None:
    expected = token()
    assert expected is not None
    request.session.cycle_key()  # a new key: one fixed before the login is worth nothing
    request.session[SESSION_KEY] = session_value(expected)


def _header_token(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization") or headers.get("Authorization") or ""
    scheme, _, credential = value.partition(" ")
    return credential.strip() if scheme.lower() == "token" else None


NOT_LOGGED_IN = (
    "not logged in: open the URL with ?token=... that `lockwatch serve` printed,"
    " or send 'Authorization: Token ...'"
)


def check_user(user: Any) -> bool:
    try:
        check = import_string(get_config().access_check)
    except ImportError as exc:
        log.error("lockwatch: ACCESS_CHECK cannot be imported: %s", exc)
        return False
    return bool(check(user))


def _user_decision(user: Any, where: str) -> Decision:
    if user is None:
        return Decision(False, f"no user on the {where}: see the lockwatch mounting instructions")
    if check_user(user):
        return ALLOWED
    if not getattr(user, "is_authenticated", False):
        return Decision(False, "log in as a staff user to see lockwatch")
    return Decision(False, "this user may not see lockwatch (LOCKWATCH['ACCESS_CHECK'])")


def request_allowed(request: HttpRequest) -> Decision:
    if token_mode():
        if _session_ok(getattr(request, "session", None)):
            return ALLOWED
        candidate = _header_token(request.headers)
        if candidate:
            return check_token(candidate, client_of(request), NOT_LOGGED_IN)
        return Decision(False, NOT_LOGGED_IN)
    return _user_decision(getattr(request, "user", None), "request (AuthenticationMiddleware)")


def _session_key(scope: Mapping[str, Any]) -> str | None:
    session = scope.get("session")
    return getattr(session, "session_key", None) if session is not None else None


def _scope_decision(scope: Mapping[str, Any]) -> Decision:
    if token_mode():
        if _session_ok(scope.get("session")):
            return Decision(True, session_key=_session_key(scope))
        client = (scope.get("client") or [None])[0]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        candidate = _header_token(headers) or (query.get("token") or [None])[0]
        if candidate:
            return check_token(candidate, client, NOT_LOGGED_IN)
        return Decision(False, NOT_LOGGED_IN)
    decision = _user_decision(scope.get("user"), "websocket (wrap it in AuthMiddlewareStack)")
    if decision and getattr(scope.get("user"), "is_authenticated", False):
        return Decision(True, session_key=_session_key(scope))
    return decision


async def scope_allowed(scope: Mapping[str, Any]) -> Decision:
    # Loading a session or a custom check may touch the database: not on the event loop.
    return await sync_to_async(_scope_decision, thread_sensitive=True)(scope)


def _still_allowed(decision: Decision) -> bool:
    if decision.session_key is None:
        return True  # let in by a token, which a logout does not change
    engine = import_module(settings.SESSION_ENGINE)
    session = engine.SessionStore(decision.session_key)  # read afresh, not the cached one
    if token_mode():
        return _session_ok(session)
    from django.contrib.auth import get_user

    return check_user(get_user(SimpleNamespace(session=session)))


async def still_allowed(decision: Decision) -> bool:
    """Whether the session that let a websocket in is still logged in (not logged out)."""
    return await sync_to_async(_still_allowed, thread_sensitive=True)(decision)
