"""The websocket's origin rule: the page's own scheme, host and port, or a trusted origin.

Browsers send a host's cookies to every port of it, so a page served by the watched
app or a dev server on another port of 127.0.0.1 could open the dashboard's socket
as the logged-in user. channels' ``AllowedHostsOriginValidator`` compares host names
only. This is the check Django's CSRF middleware makes of a form POST's ``Origin``:
equal to ``scheme://host[:port]`` of the request itself (``request.get_host()``, so
``ALLOWED_HOSTS``, ``USE_X_FORWARDED_HOST`` and ``SECURE_PROXY_SSL_HEADER`` apply),
or listed in ``CSRF_TRUSTED_ORIGINS`` (``https://*.example.com`` for subdomains).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.utils.http import is_same_domain


def _request(scope: Mapping[str, Any]) -> ASGIRequest:
    """The handshake as Django sees an HTTP request, for get_host() and scheme."""
    secure = scope.get("scheme") in ("wss", "https")
    http = {**scope, "type": "http", "method": "GET", "scheme": "https" if secure else "http"}
    return ASGIRequest(http, io.BytesIO())


def _trusted(origin: str) -> bool:
    trusted = list(getattr(settings, "CSRF_TRUSTED_ORIGINS", []))
    if origin in trusted:
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    for pattern in trusted:
        if "*" not in pattern:
            continue
        allowed = urlsplit(pattern)
        if allowed.scheme == parsed.scheme and is_same_domain(
            parsed.netloc, allowed.netloc.lstrip("*")
        ):
            return True
    return False


def allowed(scope: Mapping[str, Any]) -> bool:
    """Whether the websocket handshake in `scope` comes from a page the dashboard served."""
    request = _request(scope)
    origin = request.META.get("HTTP_ORIGIN")
    if not origin:
        return False  # every browser sends one on a websocket; a page cannot drop it
    try:
        own = f"{request.scheme}://{request.get_host()}"
    except DisallowedHost:
        own = None
    return origin == own or _trusted(origin)
