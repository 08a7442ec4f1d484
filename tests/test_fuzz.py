"""Bad input, generated: query strings, URLs and websocket frames never make a 500 or a crash.

The export's own filters are fuzzed in test_unit_export.py; here the same filters
arrive through the dashboard, together with its own parameters (window, page,
sort, dir), over every page, partial and the export, logged in on the standalone
server. Hand-picked bad values with their exact messages are in
test_dashboard_views.py and test_dashboard_consumers.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from channels.testing import WebsocketCommunicator
from django.http import QueryDict
from django.test import Client
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lockwatch.dashboard import params
from lockwatch.store import filters
from tests.support.dashboard import (
    AUTH,
    LAYERS,
    PARTIALS,
    TOKEN,
    communicator,
    figure,
    server_settings,
    story,
)


def fuzz(examples: int) -> settings:
    # No deadline: a chart request's time depends on the machine, not on the input.
    return settings(max_examples=examples, deadline=None)


# One store and one login for the module: hypothesis calls each test many times.
@pytest.fixture(scope="module")
def ids(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    path = tmp_path_factory.mktemp("fuzz") / "lockwatch.sqlite3"
    found = story(path)
    with server_settings(path, CHANNEL_LAYERS=LAYERS, ALLOWED_HOSTS=["127.0.0.1"]):
        yield found


@pytest.fixture(scope="module")
def client(ids: dict[str, int]) -> Client:
    c = Client()
    assert c.get(f"/?token={TOKEN}").status_code == 302
    return c


# -- query strings -----------------------------------------------------------------

# "token" is left out: on a page it is a login attempt, refused with a 403 on purpose.
NAMES = sorted({"window", "since", "until", "page", "sort", "dir", *filters.FIELDS})
REAL = [
    *params.WINDOWS, params.CUSTOM, *params.CALLSITE_SORTS, "asc", "desc", "busy", "wait",
    "timeout", "upgrade", "15m", "2h", "1d", "0s", "1", "0", "-1", "", " ", "\x00", "%", "'",
    "<script>alert(1)</script>", "\u202e", "🔒", "²", "١", "9" * 30, "1e9", "NaN", "inf", "-0",
]  # fmt: skip
OFFSETS = ["", "Z", "+00:00", "+05:30", "+23:59", "-23:59"]

values = st.one_of(
    st.sampled_from(REAL),
    st.text(max_size=40),  # any unicode, NUL included
    st.integers(1, 20_000).map(lambda n: "9" * n),  # huge
    st.integers().map(str),
    st.floats().map(str),  # nan, inf, -0.0, 1e+300
    st.tuples(st.datetimes(), st.sampled_from(OFFSETS)).map(lambda t: t[0].isoformat() + t[1]),
    st.tuples(st.integers(0, 10**40), st.sampled_from("smhdw")).map(lambda t: f"{t[0]}{t[1]}"),
    st.dates().map(str),
)
pairs = st.lists(
    st.tuples(st.one_of(st.sampled_from(NAMES), st.text(max_size=12)), values), max_size=6
)
# Not urlencoded: stray %, invalid escapes, invalid UTF-8 once decoded.
raw = st.one_of(
    pairs.map(urlencode),
    st.text(max_size=60).map(lambda s: quote(s, safe="=&%+;")),
    st.lists(st.sampled_from(["%", "%ff", "%c3", "%00", "=", "&", ";", "+", "a", "page"])).map(
        "".join
    ),
)

PAGES = ["/", "/events/1/", *PARTIALS]
# Inputs sent, for the record (read it after a run: tests.test_fuzz.tried).
tried = {"queries": 0, "urls": 0, "frames": 0}


def body(response: Any) -> bytes:
    # The export streams: read it all, so a failure mid-stream shows here too.
    return b"".join(response.streaming_content) if response.streaming else response.content


def names_in(query: str) -> list[str]:
    return list(QueryDict(query).keys())


@fuzz(200)
@given(query=raw)
@example(query="page=" + "9" * 4301)  # past int()'s digit limit
@example(query="page=%C2%B2&pid=%C2%B2")  # "²": isdigit() says yes, int() says no
@example(query="since=" + "9" * 400 + "w")  # an age of more than all time
@example(query="sort=" + "x" * 20_000)  # quoted back, but not all of it
@example(query="window=custom&since=0001-01-01&until=9999-12-31T23:59:59.999999")
def test_fuzzed_query_strings_are_200_or_a_one_line_400(client, query):
    for page in PAGES:
        tried["queries"] += 1
        response = client.get(f"{page}?{query}")
        content = body(response)
        assert response.status_code in (200, 400), (page, query, content[:300])
        if response.status_code == 400 and page != "/":
            text = content.decode()
            assert text.startswith("lockwatch: ") and text.count("\n") == 1, text
            assert len(text) < 1000  # a 20 KB value is quoted cut short
            # It names the parameter it refuses.
            assert any(k in text or repr(k) in text for k in names_in(query)), text


@pytest.mark.parametrize("chart", ["busy", "waits"])
def test_a_window_of_all_time_is_drawn_in_at_most_300_points(client, chart):
    # Day buckets alone made 3.6 million points (490 MB of JSON) for this window.
    query = "window=custom&since=0001-01-01&until=9999-12-31T23:59:59"
    fig = figure(client.get(f"/partials/chart/{chart}/?{query}"))
    assert 0 < max(len(trace["x"]) for trace in fig["data"]) <= params.MAX_POINTS + 1


# -- URLs --------------------------------------------------------------------------

TRICKY = [
    "..", "%2e%2e", "..%2f..%2fetc%2fpasswd", "../../../etc/passwd", "%00", "1%00", "1.5", "1e3",
    "0x10", "１", "-0", " 1", "9" * 5000, "busy/../..", "\\..\\..", str(2**63 - 1), str(2**63),
    str(2**64),
]  # fmt: skip
segments = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(TRICKY),
    st.text(min_size=1, max_size=30).map(lambda s: quote(s, safe="/%")),
)


@fuzz(150)
@given(segment=segments)
def test_fuzzed_event_and_chart_urls_are_never_500(client, segment):
    for url in (f"/events/{segment}/", f"/partials/chart/{segment}/", f"/{segment}"):
        tried["urls"] += 1
        response = client.get(url)
        assert response.status_code in (200, 400, 404), (url, response.status_code)


@pytest.mark.parametrize(
    "event_id", ["0", "999999", str(2**63 - 1), str(2**63), "9" * 30, "9" * 5000]
)
def test_unknown_event_ids_are_404(client, event_id):
    assert client.get(f"/events/{event_id}/").status_code == 404


# -- websocket frames --------------------------------------------------------------

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(),
        st.text(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
controls = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(["hello", "pause", "resume", "ping"]), json_values)},
    optional={"after": st.one_of(st.integers(-(2**70), 2**70), json_values)},
)
# (ASGI key, data): ("text", str) or ("bytes", bytes)
frames = st.one_of(
    controls.map(lambda c: ("text", json.dumps(c))),
    json_values.map(lambda v: ("text", json.dumps(v))),
    st.text(max_size=100).map(lambda s: ("text", s)),
    st.binary(max_size=100).map(lambda b: ("bytes", b)),
    # Nested deeper than Python's recursion limit, yet under the 4 KB frame limit.
    st.integers(1, 2000).map(lambda n: ("text", "[" * n + "]" * n)),
    st.integers(1, 1000).map(lambda n: ("text", '{"a":' * n + "1" + "}" * n)),
    st.integers(4000, 70_000).map(lambda n: ("text", '{"type":"ping","x":"' + "x" * n + '"}')),
    st.integers(0, 70_000).map(lambda n: ("bytes", b"\xff" * n)),
)


async def ping(comm: WebsocketCommunicator) -> list[dict[str, Any]]:
    """Ping, and return what came before the pong; fail on a close or a crash."""
    await comm.send_json_to({"type": "ping"})
    before: list[dict[str, Any]] = []
    while True:
        output = await comm.receive_output(timeout=5)  # re-raises the consumer's exception
        assert output["type"] == "websocket.send", f"the socket closed: {output}"
        frame = json.loads(output["text"])
        if frame["type"] == "pong":
            return before
        before.append(frame)


@fuzz(100)
@given(sent=st.lists(frames, min_size=1, max_size=8))
@example(sent=[("text", "[" * 2000 + "]" * 2000), ("text", '{"a":' * 800 + "1" + "}" * 800)])
@example(sent=[("text", ""), ("bytes", b""), ("text", '{"type":"hello","after":-1e999}')])
def test_fuzzed_frames_get_an_error_or_nothing_and_the_socket_lives_on(ids, sent):
    async def go() -> None:
        comm = communicator(AUTH)
        connected, _ = await comm.connect()
        assert connected
        assert (await comm.receive_json_from(timeout=5))["type"] == "hello"
        try:
            for kind, data in sent:
                tried["frames"] += 1
                # As daphne hands a frame over; send_to() refuses empty ones.
                await comm.send_input({"type": "websocket.receive", kind: data})
                for frame in await ping(comm):
                    assert frame["type"] in ("error", "batch"), frame
                    if frame["type"] == "error":
                        assert frame["fatal"] is False and "\n" not in frame["message"]
        finally:
            await comm.disconnect()

    asyncio.run(go())
