"""The dashboard's sentences read as English whatever the window or the blocker's end."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client

from tests.support.dashboard import TOKEN, server_settings, story


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[tuple[Client, Path, dict[str, int]]]:
    store = tmp_path / "lockwatch.sqlite3"
    ids = story(store)
    with server_settings(store):
        client = Client()
        assert client.get(f"/?token={TOKEN}").status_code == 302
        yield client, store, ids


@pytest.mark.parametrize(
    ("query", "label"),
    [
        ("window=1h", "(last hour)"),
        ("window=custom&since=2h", "(since "),  # a custom range with no end runs up to now
        ("window=custom&since=2h&until=1h", "(20"),  # from one ISO time to another
    ],
)
def test_header_names_the_window_of_its_busy_count(dashboard, query, label):
    client, _, _ = dashboard
    body = client.get(f"/partials/header/?{query}").content.decode()
    said = body.split('id="fig-busy">', 1)[1].split("</div>", 1)[0]
    assert f"busy errors <small>{label}" in said
    assert "()" not in said and said.count("UTC") == (label != "(last hour)")


@pytest.mark.parametrize(
    ("end", "said"),
    [
        ("commit", "and committed."),
        ("rollback", "and rolled back."),
        ("error", "and ended in an error."),
        ("abandoned", "and was abandoned (never committed or rolled back)."),
    ],
)
def test_event_page_says_how_the_blocker_ended(dashboard, end, said):
    client, store, ids = dashboard
    conn = sqlite3.connect(store)
    with conn:
        conn.execute('UPDATE events SET "end" = ? WHERE id = ?', (end, ids["holder"]))
    conn.close()
    body = client.get(f"/events/{ids['busy']}/").content.decode()
    assert said in body
    assert "ended with" not in body
