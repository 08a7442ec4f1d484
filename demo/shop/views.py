"""The shop's endpoints, each one a classic way to meet "database is locked" under load.

Each view that has a fix keeps both versions side by side: ``settings.DEMO_FIXED``
(phase 2 of scripts/demo.sh) picks the fixed one.
"""

from __future__ import annotations

import functools
import random
import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.db import OperationalError, connection, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from .models import Order, Product, Visit

PASSWORD = "correct horse battery staple"

View = Callable[..., Any]


def _locked(exc: OperationalError) -> JsonResponse:
    return JsonResponse({"error": str(exc)}, status=503)


def locked_as_503(view: View) -> View:
    """A lock error becomes a 503 with a JSON body, so the load generator can count it."""
    if iscoroutinefunction(view):

        @functools.wraps(view)
        async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            try:
                return await view(request, *args, **kwargs)
            except OperationalError as exc:
                return _locked(exc)

        return async_wrapper

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        try:
            return view(request, *args, **kwargs)
        except OperationalError as exc:
            return _locked(exc)

    return wrapper


def index(request: HttpRequest) -> JsonResponse:
    """The endpoints, and the configuration this worker really runs with."""
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        journal_mode = cursor.fetchone()[0]
    return JsonResponse(
        {
            "endpoints": ["/create_user/", "/checkout/", "/visit/", "/async/checkout/", "/audit/"],
            "fixed": settings.DEMO_FIXED,
            "journal_mode": journal_mode,
            "transaction_mode": connection.transaction_mode or "DEFERRED",
        }
    )


# -- 1. create_user: a slow password hash inside the transaction ------------------------


def create_user_as_in_the_bug_report(username: str) -> User:
    # Under Django's default (deferred) transactions the reads take a shared lock, and the
    # INSERT after 0.3 s of hashing must upgrade it: if another connection has started
    # writing meanwhile, SQLite refuses at once, without waiting ("upgrade").
    # Under IMMEDIATE the write lock is taken at BEGIN and held through the hashing, so
    # the other writers queue behind it until their 5 s timeout ("timeout").
    with transaction.atomic():
        list(User.objects.order_by("-id")[:5])
        return User.objects.create_user(username, password=PASSWORD)


def create_user_fixed(username: str) -> User:
    # Hash first, with no transaction open: the write lock is then held for milliseconds.
    password = make_password(PASSWORD)
    with transaction.atomic():
        list(User.objects.order_by("-id")[:5])
        return User.objects.create(username=username, password=password)


@require_POST
@locked_as_503
def create_user(request: HttpRequest) -> JsonResponse:
    username = f"user-{uuid.uuid4().hex[:12]}"
    if settings.DEMO_FIXED:
        user = create_user_fixed(username)
    else:
        user = create_user_as_in_the_bug_report(username)
    return JsonResponse({"id": user.pk})


# -- 2. checkout: read, then write, in one transaction --------------------------------


def place_order() -> int:
    # Read then write in a deferred transaction: the read takes a shared lock, and
    # upgrading it to a write lock fails at once if another connection is writing.
    # The fix is not in this code: under IMMEDIATE (phase 2) BEGIN waits for the lock.
    with transaction.atomic():
        product = Product.objects.get(pk=random.randint(1, 20))  # the 20 from migration 0002
        product.stock -= 1
        product.save(update_fields=["stock"])
        return Order.objects.create(product=product).pk


@require_POST
@locked_as_503
def checkout(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"order": place_order()})


# -- 3. visit: a plain autocommit write that never fails, but waits --------------------


@require_POST
@locked_as_503
def visit(request: HttpRequest) -> JsonResponse:
    # One INSERT on its own waits in SQLite's busy handler instead of failing: nothing
    # shows in the logs, yet each request may spend seconds queued for the write lock.
    Visit.objects.create(path=request.path)
    return JsonResponse({"ok": True})


# -- 4. the same checkout from an async view ------------------------------------------


@require_POST
@locked_as_503
async def async_checkout(request: HttpRequest) -> JsonResponse:
    # The ORM is synchronous: sync_to_async runs it in a worker thread, and the busy
    # error comes back through the await like any other exception.
    order = await sync_to_async(place_order)()
    return JsonResponse({"order": order})


# -- 5. audit: a second connection that Django does not own ---------------------------


@require_POST
def audit(request: HttpRequest) -> JsonResponse:
    # Like pandas.to_sql or SQLAlchemy beside Django: a plain sqlite3 connection with a
    # short busy timeout. It gives up ("timeout") whenever a long batch holds the write
    # lock for longer than that. lockwatch sees it through instrument_sqlite3() (apps.py).
    conn = sqlite3.connect(settings.DATABASES["default"]["NAME"], timeout=1.0)
    try:
        with conn:
            conn.execute(
                "INSERT INTO shop_visit (path, created) VALUES (?, ?)",
                (request.path, datetime.now(UTC).isoformat()),
            )
    except sqlite3.OperationalError as exc:
        return JsonResponse({"error": str(exc)}, status=503)
    finally:
        conn.close()
    return JsonResponse({"ok": True})
