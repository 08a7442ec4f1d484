"""A store that cannot be read as this lockwatch's: every reader says so at once, in one line.

Two kinds: a file that is not SQLite at all, and a store written by a newer lockwatch
(``PRAGMA user_version`` above ``store.SCHEMA_VERSION``), which the read-only readers
used to open without looking. The dashboard answers a clear 503; ``lockwatch export``
and ``lockwatch doctor`` print one line on stderr and exit 2.
"""

from __future__ import annotations

import asyncio
import csv
import io
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from lockwatch import store
from lockwatch.dashboard import auth
from tests.conftest import ROOT, free_port
from tests.support.dashboard import (
    AUTH,
    HOST,
    LAYERS,
    ORIGIN,
    PARTIALS,
    TOKEN,
    application,
    server_settings,
    story,
)
from tests.support.servers import TOKEN as SERVE_TOKEN
from tests.support.servers import Server


def newer(path: Path) -> Path:
    """A store as a later lockwatch might leave it: the story, one schema version up."""
    story(path)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    return path


def garbage(path: Path) -> Path:
    path.write_bytes(b"this is not a lockwatch store\n" * 200)
    return path


MAKERS = {"newer": newer, "garbage": garbage}
SAYS = {"newer": "newer than this lockwatch", "garbage": "not a lockwatch store"}


@pytest.fixture(params=list(MAKERS))
def bad(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    path = MAKERS[request.param](tmp_path / "lockwatch.sqlite3")
    auth.THROTTLE.clear()
    with server_settings(path, CHANNEL_LAYERS=LAYERS, ALLOWED_HOSTS=["127.0.0.1"]):
        yield request.param, path


def logged_in() -> Client:
    c = Client()
    assert c.get(f"/?token={TOKEN}").status_code == 302
    return c


@pytest.mark.parametrize("url", PARTIALS)
def test_partials_and_the_export_answer_503_in_one_line(bad, url):
    kind, _ = bad
    response = logged_in().get(url)
    assert response.status_code == 503
    assert not response.streaming  # the export too: an answer now, not a body that fails later
    text = response.content.decode()
    assert text.startswith("lockwatch: ") and text.count("\n") == 1
    assert SAYS[kind] in text


@pytest.mark.parametrize("url", ["/", "/events/1/"])
def test_pages_say_why_the_store_cannot_be_shown(bad, url):
    kind, path = bad
    response = logged_in().get(url)
    assert response.status_code == 503
    body = response.content.decode()
    assert SAYS[kind] in body and str(path) in body


def test_the_websocket_says_so_and_closes(bad):
    kind, _ = bad

    async def go() -> dict:
        comm = WebsocketCommunicator(application(), "/ws/", headers=[HOST, ORIGIN, AUTH])
        connected, _ = await comm.connect()
        assert connected
        try:
            frame = await comm.receive_json_from(timeout=5)
            closed = await comm.receive_output(timeout=5)
            assert closed["type"] == "websocket.close"
            return frame
        finally:
            await comm.disconnect()

    frame = asyncio.run(go())
    assert frame["type"] == "error" and frame["fatal"] is True
    assert SAYS[kind] in frame["message"]


# -- the command line --------------------------------------------------------------------


def lockwatch(*args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "lockwatch", *args], cwd=ROOT, capture_output=True, timeout=60
    )


@pytest.mark.parametrize("command", ["export", "doctor"])
@pytest.mark.parametrize("kind", list(MAKERS))
def test_cli_refuses_a_store_it_cannot_read_in_one_line(tmp_path, command, kind):
    path = MAKERS[kind](tmp_path / "lockwatch.sqlite3")
    done = lockwatch(command, "--store", str(path))
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert err.startswith(f"lockwatch {command}: error: ") and err.count("\n") == 1, err
    assert SAYS[kind] in err
    assert done.stdout == b""  # not even the CSV header


@pytest.mark.parametrize("option", ["--context", "--call-site", "--kind", "--since"])
def test_cli_filter_that_is_not_text_is_one_line_exit_2(tmp_path, option):
    path = tmp_path / "lockwatch.sqlite3"
    story(path)
    # Bytes that are not UTF-8 reach Python as lone surrogates.
    done = lockwatch("export", "--store", str(path), option, b"shop\xff")
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert err.startswith("lockwatch export: error: ") and err.count("\n") == 1, err
    assert option.lstrip("-").replace("-", "_") in err or option in err


# -- the real server: an answer, not a hang ----------------------------------------------


def test_served_export_of_a_corrupt_store_answers_at_once(tmp_path):
    path = garbage(tmp_path / "lockwatch.sqlite3")
    server = Server(path, free_port(), tmp_path / "serve.log")
    server.start()
    try:
        server.wait_ready()
        started = time.monotonic()
        conn = HTTPConnection("127.0.0.1", server.port, timeout=15)
        try:
            conn.request("GET", "/export.csv", headers={"Authorization": f"Token {SERVE_TOKEN}"})
            response = conn.getresponse()
            body = response.read().decode()
        finally:
            conn.close()
        assert time.monotonic() - started < 10
        assert response.status == 503
        assert body.startswith("lockwatch: ") and body.count("\n") == 1
    finally:
        server.stop()


def test_an_export_that_breaks_partway_ends_with_why(tmp_path, monkeypatch):
    # Damage deeper in than the first reads shows only once the response has started;
    # an exception there left daphne's client waiting forever.
    from lockwatch.store import export

    path = tmp_path / "lockwatch.sqlite3"
    story(path)
    real = export._blocks

    def breaking(*args, **kwargs):
        blocks = real(*args, **kwargs)
        yield next(blocks)
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(export, "_blocks", breaking)
    auth.THROTTLE.clear()
    with server_settings(path):
        response = logged_in().get("/export.csv")
        assert response.status_code == 200 and response.streaming
        text = b"".join(response.streaming_content).decode()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 1 + 7 + 1  # the header, the story's events, and why it stopped
    assert rows[-1] == ["# lockwatch: the export stopped early: database disk image is malformed"]
