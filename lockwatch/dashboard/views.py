"""Pages and htmx partials. Every one checks access, parses its query string and
reads the store through a read-only connection.

Bad parameters are a 400 with one line of text (htmx shows it), never a 500.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    QueryDict,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import escape
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_GET, require_POST

from lockwatch import doctor as doctor_module
from lockwatch import events
from lockwatch.conf import get_config
from lockwatch.store import export, reading
from lockwatch.store.filters import FilterError, shown

from . import auth, chains, figures, heldnow, params, queries
from .figures import CHARTS, EMPTY, TIMELINE_BUDGET  # noqa: F401  (TIMELINE_BUDGET: tests)
from .serving import configured_store, data, text_response

log = logging.getLogger("lockwatch.dashboard")


def _without_token(url: str) -> str:
    """`url` less any ``token`` parameter: a wrong or stale token is never sent back."""
    parts = urlsplit(url)
    query = QueryDict(parts.query, mutable=True)
    query.pop("token", None)
    return urlunsplit(parts._replace(query=query.urlencode()))


def page_denied(
    request: HttpRequest, reason: str, status: int = 403, next_url: str | None = None
) -> HttpResponse:
    if auth.token_mode():
        next_url = next_url or _without_token(request.get_full_path())
        return render(
            request, "lockwatch/login.html", {"reason": reason, "next": next_url}, status=status
        )
    return render(
        request,
        "lockwatch/message.html",
        {"title": "Not allowed", "message": reason, "login_url": settings.LOGIN_URL},
        status=status,
    )


def unreadable(request: HttpRequest, exc: reading.UnreadableStore) -> HttpResponse:
    return render(
        request,
        "lockwatch/message.html",
        {"title": "Store unreadable", "message": str(exc), "token_mode": auth.token_mode()},
        status=503,
    )


def when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for item in items:
        item["when"] = when(item.get("ts"))
    return items


def _revision(v: params.View) -> str:
    return v.window.name if v.window.live else f"{v.window.since}-{v.window.until}"


def window_query(v: params.View, **extra: Any) -> str:
    return urlencode({**v.window.as_query(), **{k: x for k, x in extra.items() if x is not None}})


# -- pages -----------------------------------------------------------------------


def token_login(request: HttpRequest) -> HttpResponse:
    """``?token=`` on a page logs in, then drops the token from the address bar."""
    decision = auth.check_token(request.GET["token"], auth.client_of(request))
    if not decision:
        return page_denied(request, decision.reason, decision.status)
    auth.login(request)
    rest = request.GET.copy()
    del rest["token"]
    return HttpResponseRedirect(request.path + (f"?{rest.urlencode()}" if rest else ""))


@require_GET
@never_cache
def index(request: HttpRequest) -> HttpResponse:
    if auth.token_mode() and "token" in request.GET:
        return token_login(request)
    decision = auth.request_allowed(request)
    if not decision:
        return page_denied(request, decision.reason, decision.status)
    try:
        v = params.parse_view(request.GET)
    except FilterError as exc:
        return render(
            request,
            "lockwatch/message.html",
            {"title": "Bad parameter", "message": str(exc), "back": request.path},
            status=400,
        )
    try:
        conn = configured_store()
    except reading.UnreadableStore as exc:
        return unreadable(request, exc)
    if conn is not None:
        conn.close()
    base = reverse("lockwatch:index")
    context = {
        "view": v,
        "windows": list(params.WINDOWS),
        "kinds": events.KINDS,
        "classifications": events.CLASSIFICATIONS,
        "filters": v.filters,
        "since_text": events.iso(v.window.since) if not v.window.live else "",
        "until_text": events.iso(v.window.until) if not v.window.live and v.window.until else "",
        "ws_path": base + "ws/",
        "detail_url": reverse("lockwatch:event", args=[0]),
        "token_mode": auth.token_mode(),
        "store_path": str(get_config().store),
    }
    return render(request, "lockwatch/index.html", context)


def _shares(text: str | None) -> list[dict[str, Any]]:
    """A stored JSON list of objects (a wait's split, a transaction's reads); [] if none
    or unreadable."""
    if not text:
        return []
    try:
        shares = json.loads(text)
    except ValueError:
        return []
    return [s for s in shares if isinstance(s, dict)] if isinstance(shares, list) else []


@require_GET
@never_cache
def event_detail(request: HttpRequest, event_id: int) -> HttpResponse:
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
        raise Http404("no lockwatch store yet")
    try:
        ev = chains.event(conn, event_id)
        if ev is None:
            return render(
                request,
                "lockwatch/message.html",
                {"title": "No such event", "message": f"There is no event {event_id} in the store "
                 "(it may have been pruned by retention).", "back": reverse("lockwatch:index")},
                status=404,
            )  # fmt: skip
        chain = chains.blocker_chain(conn, ev)
        caused = _rows(chains.caused(conn, ev))
    except sqlite3.DatabaseError as exc:
        return render(
            request,
            "lockwatch/message.html",
            {"title": "Store unreadable", "message": f"The store cannot be read: {exc}",
             "back": reverse("lockwatch:index")},
            status=503,
        )  # fmt: skip
    finally:
        conn.close()
    for link in chain:
        if link["event"] is not None:
            link["event"]["when"] = when(link["event"]["ts"])
    ev["when"] = when(ev["ts"])
    split = _shares(ev.get("blocker_split"))
    reads = _shares(ev.get("txn_reads"))
    for r in reads:
        r["when"] = when(r["ts"]) if isinstance(r.get("ts"), int | float) else ""
    fields = [
        (c.name, c.doc, when(ev[c.name]) if c.name in ("ts", "lock_ts") else ev[c.name])
        for c in events.COLUMNS
        if ev.get(c.name) not in (None, "")
    ]
    return render(
        request,
        "lockwatch/detail.html",
        {"ev": ev, "chain": chain, "caused": caused, "fields": fields, "split": split,
         "reads": reads,
         "stack": (ev.get("user_stack") or "").split(" < ") if ev.get("user_stack") else [],
         "token_mode": auth.token_mode()},
    )  # fmt: skip


@csrf_protect
@require_POST
def login(request: HttpRequest) -> HttpResponse:
    if not auth.token_mode():
        raise Http404("token login is for the standalone server")
    target = _without_token(request.POST.get("next") or reverse("lockwatch:index"))
    if not url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        target = reverse("lockwatch:index")
    decision = auth.check_token(request.POST.get("token", "").strip(), auth.client_of(request))
    if not decision:
        return page_denied(request, decision.reason, decision.status, next_url=target)
    auth.login(request)
    return HttpResponseRedirect(target)


@csrf_protect
@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    if not auth.token_mode():
        raise Http404("token logout is for the standalone server")
    request.session.flush()
    return HttpResponseRedirect(reverse("lockwatch:index"))


# -- partials ------------------------------------------------------------------


@data
def header(request: HttpRequest, v: params.View, conn: sqlite3.Connection | None) -> HttpResponse:
    h = queries.header(conn, v.window.since, v.window.until) if conn is not None else None
    empty = conn is None or queries.is_empty(conn)
    held = heldnow.held_now(conn, get_config().store)
    # A hold still going counts as the worst when it is already longer than any stored one.
    longest = max((x["seconds"] * 1000.0 for x in held if x["pid"]), default=0.0)
    stored = h.worst_hold_ms if h is not None and h.worst_hold_ms is not None else 0.0
    return render(
        request,
        "lockwatch/partials/header.html",
        {"h": h, "empty": empty, "store_path": str(get_config().store), "view": v,
         "window_label": _window_label(v.window), "held": held,
         "open_worst_ms": longest if longest > stored else None},
    )  # fmt: skip


def _window_label(w: params.Window) -> str:
    named = {"5m": "last 5 minutes", "1h": "last hour", "24h": "last 24 hours"}
    if w.live and w.name in named:
        return named[w.name]
    if w.live:  # a custom range given only its start: it runs up to now
        return f"since {when(w.since)} UTC"
    return f"{when(w.since)} – {when(w.until)} UTC"


@data
def chart(
    request: HttpRequest, v: params.View, conn: sqlite3.Connection | None, name: str
) -> HttpResponse:
    if name not in CHARTS:
        charts = ", ".join(CHARTS)
        return text_response(404, f"lockwatch: no chart {shown(name)}; charts are {charts}")
    drawn = (
        figures.build(name, conn, v, _revision(v), get_config().store)
        if conn is not None
        else figures.Drawn("", True)
    )
    return render(
        request,
        "lockwatch/partials/chart.html",
        {"name": name, "figure": drawn.text if drawn.text and not drawn.empty else None,
         "empty": drawn.empty, "empty_text": EMPTY[name], "note": drawn.note},
    )  # fmt: skip


@data
def slowest(request: HttpRequest, v: params.View, conn: sqlite3.Connection | None) -> HttpResponse:
    rows = _rows(queries.slowest(conn, v.window.since, v.window.until)) if conn else []
    return render(request, "lockwatch/partials/slowest.html", {"rows": rows})


@data
def doctor_panel(
    request: HttpRequest, v: params.View, conn: sqlite3.Connection | None
) -> HttpResponse:
    found = doctor_module.findings(conn, v.window.since, v.window.until) if conn else []
    base = reverse("lockwatch:index")

    def code(text: str) -> str:
        """Escaped, with `...` as <code>...</code> (an odd backtick stays as it is)."""
        html: str = mark_safe(re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text)))  # noqa: S308
        return html

    items = [
        {
            "finding": f,
            "title": code(f.title),
            "change": code(f.change),
            "evidence": code(f.evidence),
            "link": f"{base}?{window_query(v, call_site=f.call_site)}#events"
            if f.call_site
            else None,
        }
        for f in found
    ]
    return render(request, "lockwatch/partials/doctor.html", {"items": items})


CALLSITE_COLUMNS = (
    ("site", "call site", "where the code runs: path:line in function"),
    ("hold_ms", "write-lock hold", "total ms this call site held the write lock"),
    ("waits_caused", "waits caused", "lock waits by others while it held the lock"),
    ("busy_caused", "busy caused", "busy errors in others while it held the lock"),
    ("busy_suffered", "busy suffered", "busy errors raised at this call site"),
    ("p95_hold_ms", "p95 hold", "95th percentile of its hold times, ms (≈: estimated)"),
)


@data
def callsites(
    request: HttpRequest, v: params.View, conn: sqlite3.Connection | None
) -> HttpResponse:
    rows = (
        queries.call_sites(conn, v.window.since, v.window.until, v.sort, v.descending)
        if conn
        else []
    )
    base = reverse("lockwatch:index")
    for cs in rows:
        cs.link = f"{base}?{window_query(v, call_site=cs.site)}#events"  # type: ignore[attr-defined]
    return render(
        request,
        "lockwatch/partials/callsites.html",
        {"rows": rows, "columns": CALLSITE_COLUMNS, "sort": v.sort,
         "dir": "desc" if v.descending else "asc"},
    )  # fmt: skip


TABLE_COLUMNS = [(name, events.COLUMNS[events.INDEX[name]].doc) for name in queries.TABLE]
FILTER_LABELS = {"call_site": "call site", "q": "SQL containing", "context": "context or path"}


@data
def events_table(
    request: HttpRequest, v: params.View, conn: sqlite3.Connection | None
) -> HttpResponse:
    f = v.table_filters()
    rows, count, capped = (
        queries.page(conn, f, v.page, params.PAGE_SIZE) if conn else ([], 0, False)
    )
    pages = max(1, math.ceil(count / params.PAGE_SIZE))
    if v.page > pages and count and not capped:
        return text_response(400, f"lockwatch: page={v.page} is past the last page ({pages})")
    export_query = urlencode(f.as_query())
    active = [(name, FILTER_LABELS.get(name, name), value)
              for name, value in v.filters.as_query().items()]  # fmt: skip
    return render(
        request,
        "lockwatch/partials/events.html",
        {
            "rows": _rows(rows),
            "columns": TABLE_COLUMNS,
            "count": count,
            "capped": capped,
            "page": v.page,
            "pages": pages,
            "has_next": v.page < pages or (capped and len(rows) == params.PAGE_SIZE),
            "export_url": f"{reverse('lockwatch:export')}?{export_query}",
            "filtered": bool(active),
            "active": active,
            "numeric": ("duration_ms", "wait_ms", "hold_ms"),
            "store_missing": conn is None,
        },
    )


@data
def export_csv(
    request: HttpRequest, v: params.View, conn: sqlite3.Connection | None
) -> HttpResponse:
    """The same filters as the table (window included), streamed as CSV."""
    if conn is None:
        return text_response(404, "lockwatch: no store yet, so nothing to export")
    # Read the store now (the plan's sample, the first block): a store that cannot be
    # read is a 503 here, not an error inside a body already under way (a hang).
    lines = export.prepare(conn, v.table_filters())

    def chunks() -> Iterator[str]:
        # About 64 KB at a time, so the export is not one write (or one thread hop) a row.
        buffer: list[str] = []
        try:
            size = 0
            for line in lines:
                buffer.append(line)
                size += len(line)
                if size >= 65536:
                    yield "".join(buffer)
                    buffer, size = [], 0
            if buffer:
                yield "".join(buffer)
        except sqlite3.DatabaseError as exc:
            # Damaged further in than the first reads. The status is sent: an exception
            # here left daphne's client waiting forever, so the file ends with why.
            log.error("lockwatch: the CSV export stopped early: %s", exc)
            yield "".join(buffer) + export.error_row(f"the export stopped early: {exc}")
        finally:
            conn.close()

    sync_chunks = chunks()
    if isinstance(request, ASGIRequest):
        # Under daphne a sync iterator would be read whole into memory first; hand
        # the ASGI handler an async one that reads the store in a worker thread.
        async def async_chunks() -> AsyncIterator[str]:
            done = object()
            while True:
                chunk = await sync_to_async(next, thread_sensitive=False)(sync_chunks, done)  # type: ignore[call-arg]
                if chunk is done:
                    return
                yield chunk

        content: Any = async_chunks()
    else:
        content = sync_chunks
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="lockwatch-{stamp}.csv"'
    return response
