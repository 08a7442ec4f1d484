"""How every partial and the export are served: access, parameters, the store, and
a live refresh that sends only what changed.

Bad parameters are a 400 with one line of text (htmx shows it), never a 500.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.middleware.gzip import GZipMiddleware
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from lockwatch import store
from lockwatch.conf import get_config
from lockwatch.store import reading
from lockwatch.store.filters import FilterError

from . import auth, params

View = Callable[..., HttpResponse]
log = logging.getLogger("lockwatch.dashboard")


def text_response(status: int, message: str) -> HttpResponse:
    response = HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response


def configured_store() -> sqlite3.Connection | None:
    """The store, None when there is none yet; reading.UnreadableStore when it cannot be read."""
    try:
        return reading.open_store(get_config().store)
    except reading.UnreadableStore:
        raise
    except store.StoreError:
        return None


def data(view: View) -> View:
    """For partials and the export: access, params, store; plain-text refusals."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        decision = auth.request_allowed(request)
        if not decision:
            return text_response(decision.status, f"lockwatch: {decision.reason}")
        try:
            v = params.parse_view(request.GET)
        except FilterError as exc:
            return text_response(400, f"lockwatch: {exc}")
        try:
            conn = configured_store()
        except reading.UnreadableStore as exc:
            return text_response(503, f"lockwatch: {exc}")
        try:
            response = view(request, v, conn, *args, **kwargs)
        except sqlite3.DatabaseError as exc:  # locked for long, or not a store at all
            response = text_response(503, f"lockwatch: the store cannot be read right now: {exc}")
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        # A streamed response (the CSV export) closes the connection when it ends.
        if conn is not None and not response.streaming:
            conn.close()
        return _bounded(request, response)

    guarded: View = require_GET(never_cache(wrapper))
    return guarded


_gzip = GZipMiddleware(lambda request: HttpResponse())


def _bounded(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """A live refresh sends only what changed: lockwatch.js sends the ETag of what it shows,
    and the same content again is a bodiless 204 (htmx keeps the element as it is). Else the
    body is gzipped when the browser takes it (a big timeline is mostly repeated JSON).

    Not a 304: nothing is stored by the browser (no-store), the page keeps the tag itself.
    Partials hold no secret (no CSRF token), so compression reveals nothing (BREACH).
    """
    if response.streaming or response.status_code != 200:
        return response
    tag = '"' + hashlib.blake2b(response.content, digest_size=12).hexdigest() + '"'
    shown = request.headers.get("X-Lockwatch-Shown", "").removeprefix("W/")  # gzip weakens it
    if shown == tag:
        unchanged = HttpResponse(status=204)
        unchanged["ETag"] = tag
        unchanged["Cache-Control"] = response.get("Cache-Control", "no-store")
        return unchanged
    response["ETag"] = tag
    return _gzip.process_response(request, response)
