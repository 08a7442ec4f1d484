"""One access rule for pages, partials, the CSV export and the websocket.

Standalone (``lockwatch serve``): a token, as Jupyter does. ``?token=…`` or the
login form puts its digest in the (signed-cookie) session; an
``Authorization: Token …`` header works for scripts. Mounted in a project:
``LOCKWATCH["ACCESS_CHECK"]`` on the user, ``is_staff`` by default.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest
from django.utils.module_loading import import_string

from ..conf import get_config

TOKEN_SETTING = "LOCKWATCH_DASHBOARD_TOKEN"
SESSION_KEY = "lockwatch_token"
log = logging.getLogger("lockwatch.dashboard")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""  # one line, shown to the refused client

    def __bool__(self) -> bool:
        return self.allowed


ALLOWED = Decision(True)


def token() -> str | None:
    return getattr(settings, TOKEN_SETTING, None) or None


def token_mode() -> bool:
    return token() is not None


def digest(value: str) -> str:
    return hashlib.sha256(f"lockwatch-dashboard:{value}".encode()).hexdigest()


def token_matches(candidate: str | None) -> bool:
    expected = token()
    if not expected or not candidate:
        return False
    return hmac.compare_digest(candidate.encode(), expected.encode())


def _session_ok(session: Any) -> bool:
    expected = token()
    if session is None or not expected:
        return False
    try:
        value = session.get(SESSION_KEY) or ""
    except Exception:  # a session cookie that cannot be read counts as none
        return False
    return hmac.compare_digest(str(value).encode(), digest(expected).encode())


def login(request: HttpRequest) -> None:
    expected = token()
    assert expected is not None
    request.session.cycle_key()
    request.session[SESSION_KEY] = digest(expected)


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
        if token_matches(_header_token(request.headers)):
            return ALLOWED
        return Decision(False, NOT_LOGGED_IN)
    return _user_decision(getattr(request, "user", None), "request (AuthenticationMiddleware)")


def _scope_decision(scope: Mapping[str, Any]) -> Decision:
    if token_mode():
        if _session_ok(scope.get("session")):
            return ALLOWED
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if token_matches(_header_token(headers)):
            return ALLOWED
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if token_matches((query.get("token") or [None])[0]):
            return ALLOWED
        return Decision(False, NOT_LOGGED_IN)
    return _user_decision(scope.get("user"), "websocket (wrap it in AuthMiddlewareStack)")


async def scope_allowed(scope: Mapping[str, Any]) -> Decision:
    # Loading a session or a custom check may touch the database: not on the event loop.
    return await sync_to_async(_scope_decision, thread_sensitive=True)(scope)
