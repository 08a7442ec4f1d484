"""``GET /metrics``: who may scrape, and the Prometheus text of the store's collector.

A scrape needs the dashboard's bearer token, an address in ``--metrics-allow``, or a
logged-in session; the figures themselves come from ``metrics.registry_for``.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from lockwatch.server.metrics import registry_for

log = logging.getLogger("lockwatch")


def networks(text: str | Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Addresses or networks, comma-separated (``127.0.0.1,10.0.0.0/8``); ValueError if bad."""
    items = text.split(",") if isinstance(text, str) else list(text)
    return [ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip()]


def address_allowed(client: str | None, allowed: Iterable[Any]) -> bool:
    if not client:
        return False
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(address in network for network in allowed)


def _bearer(value: str) -> str | None:
    scheme, _, credential = value.partition(" ")
    return credential.strip() or None if scheme.lower() == "bearer" else None


def view(request: Any) -> Any:
    """``GET /metrics``: the bearer token, a configured address, or a logged-in session."""
    from django.conf import settings
    from django.http import HttpResponse

    from lockwatch.conf import get_config
    from lockwatch.dashboard import auth

    def refused(status: int, reason: str) -> HttpResponse:
        response = HttpResponse(reason + "\n", status=status, content_type="text/plain")
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="lockwatch"'
        return response

    if request.method not in ("GET", "HEAD"):
        return refused(405, "GET only")
    client = auth.client_of(request)
    allowed = getattr(settings, "LOCKWATCH_METRICS_ALLOW", None) or []
    if not address_allowed(client, networks(allowed)):
        candidate = _bearer(request.headers.get("Authorization", ""))
        if candidate is not None:
            decision = auth.check_token(candidate, client, "wrong bearer token")
        else:
            decision = auth.request_allowed(request)  # a session, or 'Token ...'
            if not decision and decision.status != 429:
                return refused(
                    401,
                    "send 'Authorization: Bearer <the dashboard token>', or scrape from an"
                    " address in --metrics-allow",
                )
        if not decision:
            return refused(decision.status, decision.reason)
    started = time.perf_counter()
    state_dir = getattr(settings, "STATE_DIR", None)  # lockwatch serve's (0700)
    call_sites = int(getattr(settings, "LOCKWATCH_METRICS_CALL_SITES", 0) or 0)
    body = generate_latest(registry_for(Path(get_config().store), state_dir, call_sites))
    response = HttpResponse(body, content_type="text/plain; version=0.0.4; charset=utf-8")
    response["Cache-Control"] = "no-store"
    elapsed = time.perf_counter() - started
    if elapsed > 1.0:
        log.warning("lockwatch metrics: a scrape took %.1f s", elapsed)
    return response
