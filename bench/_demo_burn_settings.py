"""The demo shop without lockwatch, plus a fixed CPU cost before each SQL statement.

Benchmark 2's diagnostic for its 503 share: spinning ``$BENCH_BURN_US`` µs of CPU before
every statement Django runs (``connection.execute_wrapper``, installed per request) costs
plain Django about what lockwatch costs it, with nothing else of lockwatch's. If that
alone raises the share of ``upgrade`` errors as much, lockwatch's extra 503s come from its
CPU on a saturated machine (every transaction's read-to-write window stretches), not from
how it waits.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from django.db import connection
from django.http import HttpRequest, HttpResponse

from bench._demo_plain_settings import *  # noqa: F403
from bench._demo_plain_settings import MIDDLEWARE

BURN = float(os.environ.get("BENCH_BURN_US") or 0) / 1e6


def _burn(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
    end = time.thread_time() + BURN
    while time.thread_time() < end:
        pass
    return execute(sql, params, many, context)


def burn_middleware(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    def middleware(request: HttpRequest) -> HttpResponse:
        with connection.execute_wrapper(_burn):
            return get_response(request)

    return middleware


MIDDLEWARE = ["bench._demo_burn_settings.burn_middleware", *MIDDLEWARE]
