"""Per endpoint and command (a partial), and one request's page.

Same rules as lockwatch.dashboard.views: access first, bad parameters a one-line 400,
a store that cannot be read a 503.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from lockwatch import events
from lockwatch.store import reading
from lockwatch.store.filters import FilterError

from . import auth, endpoints, params
from .serving import configured_store, data
from .views import page_denied, token_login, unreadable, when, window_query


@data
def endpoints_panel(
    request: HttpRequest, v: params.View, conn: sqlite3.Connection | None
) -> HttpResponse:
    rows, total = endpoints.endpoints(conn, v.window.since, v.window.until) if conn else ([], 0)
    base = reverse("lockwatch:index")
    classes = _classes(rows)
    cells = [
        {"ep": ep, "busy": [ep.busy.get(c, 0) for c in classes],
         "link": f"{base}?{window_query(v, context=ep.context)}#events"}
        for ep in rows
    ]  # fmt: skip
    return render(
        request,
        "lockwatch/partials/endpoints.html",
        {"rows": cells, "total": total, "classes": classes},
    )


def _classes(rows: list[endpoints.Endpoint]) -> list[str]:
    """The classifications that occur, in the usual order: one column each."""
    seen = {c for ep in rows for c in ep.busy}
    return [c for c in events.CLASSIFICATIONS if c in seen] + sorted(
        seen - set(events.CLASSIFICATIONS)
    )


def _message(request: HttpRequest, title: str, message: str, status: int) -> HttpResponse:
    return render(
        request,
        "lockwatch/message.html",
        {"title": title, "message": message, "back": reverse("lockwatch:index"),
         "token_mode": auth.token_mode()},
        status=status,
    )  # fmt: skip


def _story_page(request: HttpRequest, find: Any, focus: int | None = None) -> HttpResponse:
    """Access, the store, then ``find(conn)`` -> RequestStory | None | HttpResponse."""
    if auth.token_mode() and "token" in request.GET:
        return token_login(request)
    decision = auth.request_allowed(request)
    if not decision:
        return page_denied(request, decision.reason, decision.status)
    try:
        conn = configured_store()
    except reading.UnreadableStore as exc:
        return unreadable(request, exc)
    if conn is None:
        return _message(request, "No store yet", "Nothing has been captured yet.", 404)
    try:
        story = find(conn)
    except sqlite3.DatabaseError as exc:
        return _message(request, "Store unreadable", f"The store cannot be read: {exc}", 503)
    finally:
        conn.close()
    if isinstance(story, HttpResponse):
        return story
    if story is None:
        return _message(
            request, "No such request",
            "No event of this request is in the store in this window (it may be older, or "
            "pruned by retention).", 404,
        )  # fmt: skip
    start = story.start or 0.0
    for ev in story.events:
        ev["when"] = when(ev["ts"])
        ev["offset_ms"] = (ev["ts"] - start) * 1000.0
    waits = [ev for ev in story.events if ev["kind"] == "wait"]
    req = story.request
    return render(
        request,
        "lockwatch/request.html",
        {"story": story, "req": req, "focus": focus, "started": when(story.start),
         "wait_ms": sum(ev["wait_ms"] or 0.0 for ev in waits),
         "busy": sum(1 for ev in story.events if ev["kind"] == "busy"),
         "token_mode": auth.token_mode()},
    )  # fmt: skip


@require_GET
@never_cache
def request_of_event(request: HttpRequest, event_id: int) -> HttpResponse:
    """The request an event belongs to: every stored event of it, in order."""

    def find(conn: sqlite3.Connection) -> Any:
        found = endpoints.request_id_of(conn, event_id) if 0 <= event_id < 2**63 else None
        if found is None:
            return _message(
                request, "No request", f"Event {event_id} is not in the store, or it was not "
                "part of a request (no request id: a command, a test or a program).", 404,
            )  # fmt: skip
        rid, ts = found
        span = endpoints.REQUEST_LOOKAROUND
        return endpoints.request_story(conn, rid, ts - span, ts + span)

    return _story_page(request, find, focus=event_id)


@require_GET
@never_cache
def request_by_id(request: HttpRequest, request_id: str) -> HttpResponse:
    """A request by its id (the middleware's, or the client's X-Request-ID), in the window."""

    def find(conn: sqlite3.Connection) -> Any:
        try:
            v = params.parse_view(request.GET)
        except FilterError as exc:
            return _message(request, "Bad parameter", str(exc), 400)
        if len(request_id) > 64:
            return _message(request, "Bad parameter", "a request id is at most 64 characters", 400)
        return endpoints.request_story(conn, request_id, v.window.since, v.window.until)

    return _story_page(request, find)
