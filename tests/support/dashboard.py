"""Helpers for the dashboard tests: a store filled with a small, known story.

The story: pid 100's MainThread holds the write lock for 800 ms (HOLDER);
pid 200 waits 300 ms and gets a busy timeout, blamed on HOLDER; a second wait
in pid 200 succeeds after 50 ms. Plus a few autocommit writes and reads.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from channels.testing import WebsocketCommunicator
from django.test import override_settings

from lockwatch import events, store

HOLDER = "shop/views.py:42 in checkout"
WAITER = "shop/tasks.py:7 in sync_stock"
WAITER_CONTEXT = "command:sync_stock"
HOLDER_CONTEXT = "request:POST /checkout/"
TOKEN = "test-token-0123456789"


def insert(path: Path, rows: list[dict[str, Any]]) -> list[int]:
    """Write event rows as the flusher would (through the store's own writer)."""
    w = store.Writer(path)
    try:
        w.write([events.row(**r) for r in rows], [], [])
        n = len(rows)
        return [
            r[0] for r in w.conn.execute("SELECT id FROM events ORDER BY id DESC LIMIT ?", (n,))
        ][::-1]
    finally:
        w.close()


def attribute(path: Path, event_id: int, site: str = HOLDER, pid: int = 100) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "UPDATE events SET blocker_pid = ?, blocker_call_site = ?, blocker_context = ?,"
            " blocker_thread = 'MainThread', blocker_held_ms = 400 WHERE id = ?",
            (pid, site, HOLDER_CONTEXT, event_id),
        )
    conn.close()


def story(path: Path, now: float | None = None) -> dict[str, int]:
    """Fill a store with the story; return the ids by name."""
    now = time.time() if now is None else now
    t0 = now - 30
    base = {"db": "/srv/app/db.sqlite3", "capture_mode": "exact", "conn_id": 1}
    holder = {"pid": 100, "thread": "MainThread", "context": HOLDER_CONTEXT, **base}
    waiter = {"pid": 200, "thread": "MainThread", "context": WAITER_CONTEXT, **base}
    rows = [
        dict(ts=t0, kind="transaction", duration_ms=820.0, hold_ms=800.0, call_site=HOLDER,
             lock_call_site=HOLDER, lock_ts=t0 + 0.01, lock_sql='INSERT INTO "shop_order"',
             sql="BEGIN", begin_mode="deferred", end="commit", statements=3, **holder),
        dict(ts=t0 + 0.1, kind="wait", duration_ms=300.0, wait_ms=300.0, outcome="gave_up",
             call_site=WAITER, sql='UPDATE "shop_item" SET stock = ?', **waiter),
        dict(ts=t0 + 0.1, kind="busy", classification="timeout", duration_ms=300.0,
             wait_ms=300.0, call_site=WAITER, sql='UPDATE "shop_item" SET stock = ?',
             error_name="SQLITE_BUSY", message="database is locked", **waiter),
        dict(ts=t0 + 0.5, kind="wait", duration_ms=50.0, wait_ms=50.0, outcome="acquired",
             call_site=WAITER, sql='UPDATE "shop_item" SET stock = ?', **waiter),
        dict(ts=t0 + 1.0, kind="query", duration_ms=3.0, hold_ms=2.5, wait_ms=0.0,
             call_site=WAITER, sql='UPDATE "shop_item" SET stock = ?', stmt_class="write",
             **waiter),
        dict(ts=t0 + 2.0, kind="query", duration_ms=0.4, call_site="shop/views.py:10 in home",
             sql='SELECT "shop_item"."id" FROM "shop_item"', stmt_class="read", **holder),
        dict(ts=t0 + 2.5, kind="request", duration_ms=12.0, method="GET", path="/",
             status=200, queries=1, request_id="story-request", **holder),
    ]  # fmt: skip
    ids = insert(path, rows)
    names = ["holder", "wait", "busy", "wait_ok", "autocommit", "read", "request"]
    out = dict(zip(names, ids, strict=True))
    for name in ("wait", "busy", "wait_ok"):
        attribute(path, out[name])
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO processes (pid, started, program, capture_mode, accepted, dropped,"
            " capture_errors, store_errors, lost, live_errors, live_missed, updated)"
            " VALUES (100, ?, 'runserver', 'exact', 10, 3, 0, 0, 0, 0, 0, ?),"
            " (200, ?, 'command:sync_stock', 'exact', 5, 4, 0, 0, 0, 0, 0, ?)",
            (t0, now, t0, now),
        )
    conn.close()
    return out


TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]


def server_settings(store: Path, **extra: object) -> override_settings:
    """The standalone server's settings (lockwatch.server.settings), over the test project."""
    # Sessions in files, as the server keeps them: logout must be able to end one.
    sessions = Path(store).parent / "dashboard-sessions"
    sessions.mkdir(mode=0o700, exist_ok=True)
    return override_settings(
        ROOT_URLCONF="lockwatch.server.urls",
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
        ],
        SESSION_ENGINE="django.contrib.sessions.backends.file",
        SESSION_FILE_PATH=str(sessions),
        SESSION_COOKIE_NAME="lockwatch_session",
        CSRF_COOKIE_NAME="lockwatch_csrftoken",
        TEMPLATES=TEMPLATES,
        STATIC_URL="/static/",
        LOCKWATCH_DASHBOARD_TOKEN=TOKEN,
        LOCKWATCH={"STORE": str(store)},
        **extra,
    )


PARTIALS = [
    "/partials/header/",
    "/partials/chart/busy/",
    "/partials/chart/waits/",
    "/partials/chart/durations/",
    "/partials/chart/timeline/",
    "/partials/slowest/",
    "/partials/callsites/",
    "/partials/endpoints/",
    "/partials/doctor/",
    "/partials/events/",
    "/export.csv",
]


def figure(response) -> dict:
    """The figure as the browser draws it (each text put back, as lockwatch.js does)."""
    text = response.content.decode()
    start = text.index('class="lw-figure">') + len('class="lw-figure">')
    fig = json.loads(text[start : text.index("</script>", start)])
    strings = fig.pop("strings", None)
    for trace in fig["data"] if strings is not None else ():
        meta = trace.get("meta") or {}
        if meta.get("lw_y"):
            trace["y"] = [None if y is None else strings[y] for y in trace["y"]]
        for row in trace.get("customdata") or []:
            for j in meta.get("lw_columns", ()):
                row[j] = None if row[j] is None else strings[row[j]]
    return fig


def incident(now: float, n: int, distinct: bool, start: int = 0) -> list[dict[str, Any]]:
    """n holds and n waits or busy errors over the last 4 minutes; with ``distinct``, every
    SQL text and call site differs (the worst case for the timeline's size)."""
    rows = []
    for i in range(start, start + n):
        t = now - 240 + (i - start) * 240 / n
        tag = hashlib.sha1(str(i).encode()).hexdigest() if distinct else str(i % 9)
        holder = dict(pid=1000 + i % 12, thread="MainThread", context="command:restock")
        rows.append(dict(ts=t, kind="transaction", duration_ms=50.0 + i % 400,
                         hold_ms=40.0 + i % 400, lock_ts=t + 0.001,
                         call_site=f"shop/batch.py:{i % 40} in restock_{tag}",
                         lock_sql=f"INSERT INTO shop_order_{tag} (user_id, total) VALUES (?, ?)",
                         sql="BEGIN", end="commit", **holder))  # fmt: skip
        busy = i % 3 == 0
        rows.append(dict(ts=t + 0.01, kind="busy" if busy else "wait", wait_ms=5.0 + i % 300,
                         classification="upgrade" if busy else None, duration_ms=5.0 + i % 300,
                         outcome="gave_up" if busy else "acquired", pid=2000 + i % 16,
                         thread="MainThread", context=f"request:POST /checkout/{i % 5}/",
                         call_site=f"shop/views.py:{i % 30} in checkout_{tag}",
                         sql=f"UPDATE shop_item SET stock = ? WHERE id = ? AND tag = '{tag}'",
                         blocker_pid=holder["pid"], blocker_thread="MainThread",
                         blocker_call_site=f"shop/batch.py:{i % 40} in restock_{tag}",
                         blocker_context="command:restock"))  # fmt: skip
    return rows


LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


ORIGIN = (b"origin", b"http://127.0.0.1")


HOST = (b"host", b"127.0.0.1")


def application():
    from lockwatch.server.asgi import application

    return application


AUTH = (b"authorization", f"Token {TOKEN}".encode())


def communicator(*headers: tuple[bytes, bytes], path: str = "/ws/") -> WebsocketCommunicator:
    return WebsocketCommunicator(application(), path, headers=[HOST, ORIGIN, *headers])


async def receive(comm: WebsocketCommunicator, timeout: float = 3.0) -> dict[str, Any]:
    return await comm.receive_json_from(timeout=timeout)


async def receive_type(comm: WebsocketCommunicator, kind: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        frame = await receive(comm, max(deadline - time.monotonic(), 0.01))
        if frame["type"] == kind:
            return frame
