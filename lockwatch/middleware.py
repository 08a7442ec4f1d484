"""Tag every event of a request with the request, and record its totals."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from lockwatch import pipeline
from lockwatch.capture.context import CURRENT, Context, task_name
from lockwatch.capture.records import Request, Who


@functools.lru_cache(maxsize=8)
def _prefix_for(urlconf: str | None) -> str | None:
    from django.urls import NoReverseMatch, reverse

    try:
        prefix: str = reverse("lockwatch:index", urlconf=urlconf)
        return prefix
    except NoReverseMatch:
        return None


def _dashboard_prefix(request: HttpRequest) -> str | None:
    """Where the dashboard is mounted in the urlconf this request resolves with, if it is."""
    # Not get_urlconf(): its thread-and-task-local lookup costs more than the rest of
    # _context, and it is settings.ROOT_URLCONF at this point anyway.
    return _prefix_for(getattr(request, "urlconf", None) or settings.ROOT_URLCONF)


def _context(request: HttpRequest) -> Context:
    # META, not request.headers: that builds every header's name once per request.
    request_id = request.META.get("HTTP_X_REQUEST_ID") or os.urandom(8).hex()
    prefix = _dashboard_prefix(request)
    return Context(
        quiet=bool(prefix) and request.path.startswith(prefix),  # lockwatch's own requests
        label=f"request:{request.method} {request.path}",
        task=task_name(),
        request_id=request_id[:64],
        method=request.method,
        path=request.path,
    )


class LockwatchMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        ctx = _context(request)
        token = CURRENT.set(ctx)
        wall, t0 = time.time(), time.perf_counter()
        status = None
        try:
            response = self.get_response(request)
            status = response.status_code
            return response
        finally:
            CURRENT.reset(token)
            _finish(request, ctx, wall, t0, status)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        ctx = _context(request)
        token = CURRENT.set(ctx)
        wall, t0 = time.time(), time.perf_counter()
        status = None
        try:
            response = await self.get_response(request)
            status = response.status_code
            return response
        finally:
            CURRENT.reset(token)
            _finish(request, ctx, wall, t0, status)

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., Awaitable[Any] | Any], *args: Any
    ) -> None:
        # Runs before ATOMIC_REQUESTS opens its transaction, so BEGIN can name the view.
        ctx = CURRENT.get()
        if ctx is not None:
            match = getattr(request, "resolver_match", None)
            ctx.view = (match.route or match.view_name) if match else None
            ctx.view_func = view_func
            if match and match.view_name:
                ctx.view = f"{match.route} ({match.view_name})" if match.route else match.view_name
        return None


def _finish(request: HttpRequest, ctx: Context, wall: float, t0: float, status: int | None) -> None:
    try:
        if (ctx.queries or ctx.busy) and not ctx.quiet:
            import threading

            pipeline.emit(
                Request(Who(threading.current_thread(), ctx, ctx.task), wall,
                        time.perf_counter() - t0, status)
            )  # fmt: skip
    except Exception as exc:
        pipeline.capture_failed(exc)
