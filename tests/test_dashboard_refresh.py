"""Bounded live refreshes (issue 14): an unchanged partial is a bodiless 204, a changed one
is gzipped, and the timeline stays within its budget however distinct its texts."""

from __future__ import annotations

import gzip
import hashlib
import time
from typing import Any

from lockwatch.dashboard import views
from tests.test_dashboard_support import insert
from tests.test_dashboard_views import client, figure, ids, server, store_path  # noqa: F401


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


def test_an_unchanged_partial_is_a_bodiless_204(client, ids):  # noqa: F811
    first = client.get("/partials/callsites/")
    tag = first["ETag"]
    assert first.status_code == 200 and tag
    again = client.get("/partials/callsites/", HTTP_X_LOCKWATCH_SHOWN=tag)
    assert again.status_code == 204 and again.content == b"" and again["ETag"] == tag
    weak = client.get("/partials/callsites/", HTTP_X_LOCKWATCH_SHOWN=f"W/{tag}")
    assert weak.status_code == 204  # as gzip sent it
    other = client.get("/partials/callsites/", HTTP_X_LOCKWATCH_SHOWN='"stale"')
    assert other.status_code == 200 and other.content == first.content
    # A refusal is never mistaken for the content shown.
    assert client.get("/partials/callsites/?sort=x", HTTP_X_LOCKWATCH_SHOWN=tag).status_code == 400


def test_a_partial_is_gzipped_when_the_browser_takes_it(client, ids):  # noqa: F811
    plain = client.get("/partials/chart/timeline/")
    packed = client.get("/partials/chart/timeline/", HTTP_ACCEPT_ENCODING="gzip")
    assert packed["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed.content) == plain.content
    assert "Accept-Encoding" in packed["Vary"]


def test_the_timeline_stays_within_its_budget(client, store_path, ids):  # noqa: F811
    insert(store_path, incident(time.time(), 1500, distinct=True))
    response = client.get("/partials/chart/timeline/?window=5m", HTTP_ACCEPT_ENCODING="gzip")
    assert len(response.content) <= views.TIMELINE_BUDGET
    body = gzip.decompress(response.content).decode()
    assert "Showing the" in body and "longest holds" in body  # says what it left out
    shown = figure(type("R", (), {"content": body.encode()}))
    holds = next(t for t in shown["data"] if t.get("name") == "transaction hold")
    assert 100 < len(holds["x"]) < 1000
    assert holds["x"] == sorted(holds["x"], reverse=True)  # the longest kept


def test_repeated_texts_are_sent_once(client, store_path, ids):  # noqa: F811
    insert(store_path, incident(time.time(), 1000, distinct=False))
    response = client.get("/partials/chart/timeline/?window=5m", HTTP_ACCEPT_ENCODING="gzip")
    body = gzip.decompress(response.content).decode()
    shown = figure(type("R", (), {"content": body.encode()}))
    holds = next(t for t in shown["data"] if t.get("name") == "transaction hold")
    assert len(holds["x"]) == 1000  # all of them: nothing cut for size
    assert body.count("UPDATE shop_item SET stock") == 9  # each text once
    assert len(response.content) < 60_000
