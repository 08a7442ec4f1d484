"""Bounded live refreshes (issue 14): an unchanged partial is a bodiless 204, a changed one
is gzipped, and the timeline stays within its budget however distinct its texts."""

from __future__ import annotations

import gzip
import time

from lockwatch.dashboard import views
from tests.support.dashboard import figure, incident, insert


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
