"""Every page and partial, with and without access, and every bad parameter."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.contrib.sessions.backends.file import SessionStore
from django.test import Client, RequestFactory, override_settings
from django.urls import include, path, resolve

from lockwatch import events, store
from lockwatch.dashboard import auth
from tests.support.dashboard import HOLDER, PARTIALS, TEMPLATES, TOKEN, WAITER, figure, story

# Mounted in a project, as a user would: this module is the URLconf.
urlpatterns = [path("lockwatch/", include("lockwatch.urls"))]


# -- access: the standalone token ------------------------------------------------


@pytest.mark.parametrize("url", ["/", "/events/1/", *PARTIALS])
def test_token_mode_refuses_without_login(server, ids, url):
    response = Client().get(url)
    assert response.status_code == 403
    if url in ("/", "/events/1/"):
        assert b"Log in to lockwatch" in response.content
    else:
        assert response.content.decode().startswith("lockwatch: not logged in")
        assert response.content.count(b"\n") == 1


def test_wrong_token_is_refused(server, ids):
    response = Client().get("/?token=nope")
    assert response.status_code == 403
    assert b"not the one this server printed" in response.content


def test_token_in_url_logs_in_and_is_dropped_from_the_url(server, ids):
    c = Client()
    response = c.get(f"/?token={TOKEN}&window=5m")
    assert response.status_code == 302
    assert response["Location"] == "/?window=5m"
    page = c.get("/?window=5m")
    assert page.status_code == 200
    assert b'data-ws="/ws/"' in page.content
    assert b"htmx.min.js" in page.content and b"plotly.min.js" in page.content


@pytest.mark.parametrize("url", PARTIALS)
def test_authorization_header_is_accepted(server, ids, url):
    response = Client().get(url, HTTP_AUTHORIZATION=f"Token {TOKEN}")
    assert response.status_code == 200


def test_session_from_another_token_is_refused(server, ids):
    c = Client()
    session = SessionStore()
    session[auth.SESSION_KEY] = auth.session_value("some-other-token")
    session.save()
    c.cookies["lockwatch_session"] = session.session_key
    assert c.get("/partials/header/").status_code == 403


def test_login_form_needs_csrf(server, ids):
    c = Client(enforce_csrf_checks=True)
    assert c.post("/login/", {"token": TOKEN}).status_code == 403
    page = c.get("/")  # the login page sets the CSRF cookie
    csrf = page.cookies["lockwatch_csrftoken"].value
    response = c.post("/login/", {"token": TOKEN, "next": "/?window=24h"},
                      HTTP_X_CSRFTOKEN=csrf)  # fmt: skip
    assert response.status_code == 302
    assert response["Location"] == "/?window=24h"
    assert c.get("/partials/header/").status_code == 200


def test_login_form_refuses_a_wrong_token_and_an_offsite_next(server, ids):
    c = Client()
    assert c.post("/login/", {"token": "wrong"}).status_code == 403
    response = c.post("/login/", {"token": TOKEN, "next": "https://elsewhere.example/"})
    assert response["Location"] == "/"


def test_logout_needs_post_and_ends_the_session(client):
    assert client.get("/logout/").status_code == 405
    assert client.post("/logout/").status_code == 302
    assert client.get("/partials/header/").status_code == 403


@pytest.mark.parametrize("url", PARTIALS)
def test_data_endpoints_refuse_post(client, ids, url):
    assert client.post(url).status_code in (403, 405)


# -- pages and partials ------------------------------------------------------------


def test_index(client, ids):
    page = client.get("/")
    assert page.status_code == 200
    for element in ("plot-busy", "plot-waits", "plot-timeline", "plot-durations", "callsites",
                    "events-table", "lw-pause", "lw-window"):  # fmt: skip
        assert f'id="{element}"'.encode() in page.content
    for choice in ("5m", "1h", "24h", "custom"):
        assert f'value="{choice}"'.encode() in page.content


def test_index_prefills_filters_from_the_query(client, ids):
    page = client.get("/?kind=busy&call_site=" + HOLDER)
    assert b"<option selected>busy</option>" in page.content
    assert HOLDER.encode() in page.content


def test_header_figures(client, ids):
    body = client.get("/partials/header/").content.decode()
    assert 'id="fig-busy">1<' in body
    assert "800.0 ms" in body  # the worst hold
    assert ">7<" in body  # dropped, summed over processes
    assert "exact" in body
    assert "Nothing captured yet" not in body


def test_busy_chart_is_stacked_by_classification(client, ids):
    fig = figure(client.get("/partials/chart/busy/?window=5m"))
    assert fig["layout"]["barmode"] == "stack"
    (trace,) = fig["data"]
    assert trace["name"] == "timeout"
    assert sum(trace["y"]) == pytest.approx(1.0)  # 1 error in a 1 s bucket


def test_waits_chart_has_percentiles_and_count(client, ids):
    fig = figure(client.get("/partials/chart/waits/?window=5m"))
    names = [t["name"] for t in fig["data"]]
    assert names == ["count", "p50 wait", "p95 wait", "max wait"]
    assert sum(v for v in fig["data"][0]["y"] if v) == 2
    assert max(v for v in fig["data"][3]["y"] if v is not None) == 300.0


def test_durations_chart(client, ids):
    fig = figure(client.get("/partials/chart/durations/"))
    durations, holds = fig["data"]
    assert sum(durations["y"]) == 1  # one transaction
    assert sum(holds["y"]) == 2  # its hold and the autocommit write's


def test_timeline_has_lanes_holds_markers_and_blocker_links(client, ids):
    fig = figure(client.get("/partials/chart/timeline/"))
    by_name = {t.get("name"): t for t in fig["data"]}
    hold = by_name["transaction hold"]
    assert hold["x"] == [800.0]
    assert hold["y"] == ["request · pid 100"]
    assert hold["customdata"][0][:2] == [ids["holder"], HOLDER]
    # The tooltip's hold comes from the data, not from %{x} (on a date axis that is a
    # date, and the browser showed "held NaN ms").
    assert hold["customdata"][0][4] == 800.0
    assert "<b>held</b> %{customdata[4]:.1f} ms" in hold["hovertemplate"]
    assert "%{x" not in hold["hovertemplate"]
    busy = by_name["busy error"]
    assert busy["customdata"][0][0] == ids["busy"]
    assert busy["customdata"][0][4] == HOLDER  # the blocker's call site, on hover
    assert "blocked by" in by_name
    lanes = fig["layout"]["yaxis"]["categoryarray"]
    # Labelled by what runs there: a request worker, the sync_stock command.
    assert lanes == ["request · pid 100", "command:sync_stock · pid 200"]


def test_slowest(client, ids):
    body = client.get("/partials/slowest/").content.decode()
    assert f"/events/{ids['holder']}/" in body
    assert "820.0 ms" in body


def test_call_sites_table(client, ids):
    body = client.get("/partials/callsites/").content.decode()
    rows = body.split("<tr>")[2:]
    assert HOLDER in rows[0]  # the most hold time comes first
    assert "?window=1h&amp;call_site=shop%2Fviews.py%3A42+in+checkout#events" in rows[0]
    body = client.get("/partials/callsites/?sort=busy_suffered&dir=desc").content.decode()
    assert WAITER in body.split("<tr>")[2]


def test_call_sites_table_marks_an_estimated_p95(client, ids, store_path):
    from tests.support.dashboard import insert

    # A second hold two hours back: the 24 h window spans more than an hour of events,
    # so its p95 comes from the histogram; the 5 minute window stays exact.
    earlier = __import__("time").time() - 7200
    insert(store_path, [dict(ts=earlier, kind="transaction", duration_ms=90.0, hold_ms=80.0,
                             call_site=HOLDER, lock_call_site=HOLDER, lock_ts=earlier,
                             db="/srv/app/db.sqlite3", pid=100, conn_id=1)])  # fmt: skip
    long = client.get("/partials/callsites/?window=24h").content.decode()
    short = client.get("/partials/callsites/?window=5m").content.decode()
    assert "&asymp;" in long.split("<tr>")[2]
    assert "&asymp;" not in short


def test_doctor_panel(client, ids):
    body = client.get("/partials/doctor/").content.decode()
    # Code as code, escaped; no literal backticks.
    assert f"1 of them blocked by <code>{HOLDER}</code>" in body
    assert "`" not in body and "&quot;BUFFER_SIZE&quot;" in body
    assert "move the slow work" in body
    assert "call_site=" in body  # each finding links to its events
    assert client.get("/partials/doctor/?window=bogus").status_code == 400


def test_call_site_figures(client, ids):
    from lockwatch import store
    from lockwatch.dashboard import queries

    conn = store.connect(client_store(client), readonly=True)
    now = __import__("time").time()
    sites = {cs.site: cs for cs in queries.call_sites(conn, now - 300, now)}
    holder, waiter = sites[HOLDER], sites[WAITER]
    assert (holder.hold_ms, holder.waits_caused, holder.busy_caused, holder.busy_suffered) == (
        800.0, 2, 1, 0
    )  # fmt: skip
    assert holder.p95_hold_ms == 800.0
    assert (waiter.hold_ms, waiter.busy_suffered, waiter.busy_caused) == (2.5, 1, 0)


def client_store(client: Client) -> Path:
    from lockwatch.conf import get_config

    return get_config().store


def test_events_table_and_filters(client, ids):
    body = client.get("/partials/events/").content.decode()
    assert "7 events" in body
    for name in ("ts", "kind", "call_site", "blocker_call_site", "sql"):
        assert f">{name}</th>" in body
    body = client.get("/partials/events/?kind=busy").content.decode()
    assert "1 event match the filters" in body
    assert HOLDER in body and WAITER in body
    assert "1 event" in client.get("/partials/events/?classification=timeout").content.decode()
    assert "0 events" in client.get("/partials/events/?pid=999").content.decode()
    assert "0 events" in client.get("/partials/events/?q=shop_order&kind=busy").content.decode()
    body = client.get("/partials/events/?context=sync_stock").content.decode()
    assert "4 events" in body
    body = client.get(f"/partials/events/?call_site={HOLDER}").content.decode()
    assert "4 events" in body  # its transaction and the three waits it caused


def test_events_table_export_link_carries_the_filters(client, ids):
    body = client.get("/partials/events/?kind=busy").content.decode()
    start = body.index('href="/export.csv?') + len('href="')
    url = body[start : body.index('"', start)].replace("&amp;", "&")
    assert "kind=busy" in url and "since=" in url and "until=" in url
    rows = list(csv.reader(io.StringIO(b"".join(client.get(url).streaming_content).decode())))
    assert rows[0] == list(events.CSV_HEADER)
    assert len(rows) == 2 and rows[1][1] == "busy"


def test_events_table_pages(client, store_path, ids):
    from tests.support.dashboard import insert

    now = __import__("time").time()
    insert(store_path, [dict(ts=now - 5, kind="query", duration_ms=1.0, pid=1) for _ in range(60)])
    first = client.get("/partials/events/").content.decode()
    assert "page 1 of 2" in first
    second = client.get("/partials/events/?page=2").content.decode()
    assert "page 2 of 2" in second
    assert second.count('<tr class="kind-') == 67 - 50


def test_export_is_streamed_csv(client, ids):
    response = client.get("/export.csv?window=5m&kind=wait")
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == list(events.CSV_HEADER)
    assert [r[1] for r in rows[1:]] == ["wait", "wait"]


def test_event_detail_shows_the_chain_of_blockers(client, ids):
    body = client.get(f"/events/{ids['busy']}/").content.decode()
    assert "Chain of blockers" in body
    assert HOLDER in body and WAITER in body
    assert f"/events/{ids['holder']}/" in body  # the blocker's transaction
    assert "UPDATE &quot;shop_item&quot; SET stock = ?" in body


def test_transaction_detail_lists_what_it_caused(client, ids):
    body = client.get(f"/events/{ids['holder']}/").content.decode()
    assert "Waits and busy errors this hold caused" in body
    assert f"/events/{ids['busy']}/" in body


def test_unknown_event_is_404(client, ids):
    assert client.get("/events/999999/").status_code == 404
    assert client.get("/events/abc/").status_code == 404


def test_unknown_chart_is_404(client, ids):
    response = client.get("/partials/chart/pie/")
    assert response.status_code == 404
    assert b"charts are busy, waits, durations, timeline" in response.content


# -- bad parameters: a 400 with one line, never a 500 ------------------------------

BAD = [
    ("window=3x", "window='3x' is not one of 5m, 1h, 24h, custom"),
    ("window=custom", "window=custom needs since"),
    ("window=5m&since=1h", "cannot be combined"),
    ("since=yesterday", "since='yesterday' is not an ISO-8601 time"),
    ("since=2026-13-45T00:00:00", "is not an ISO-8601 time"),
    ("since=1h&until=2h", "since is after until"),
    ("kind=lock", "kind='lock' is not one of"),
    ("classification=slow", "classification='slow' is not one of"),
    ("page=0", "page='0' is not a page number"),
    ("page=-1", "page='-1' is not a page number"),
    ("page=abc", "page='abc' is not a page number"),
    ("page=99999999999", "is not a page number"),
    ("pid=abc", "pid='abc' is not a process id"),
    ("sort=fun", "sort='fun' is not one of"),
    ("dir=up", "dir='up' is not asc or desc"),
    ("color=red", "unknown filter 'color'"),
    ("q=%00", "q is not a valid value"),
]


@pytest.mark.parametrize("url", PARTIALS)
@pytest.mark.parametrize(("query", "message"), BAD)
def test_bad_parameters_are_400(client, ids, url, query, message):
    response = client.get(f"{url}?{query}")
    assert response.status_code == 400
    text = response.content.decode()
    assert message in text
    assert text.count("\n") == 1 and text.startswith("lockwatch: ")


def test_bad_parameters_on_the_page_are_400(client, ids):
    response = client.get("/?window=3x")
    assert response.status_code == 400
    assert b"window=&#x27;3x&#x27; is not one of" in response.content


def test_page_past_the_end_is_400(client, ids):
    response = client.get("/partials/events/?page=9")
    assert response.status_code == 400
    assert b"page=9 is past the last page (1)" in response.content


# -- empty states ------------------------------------------------------------------


def test_no_store_yet_says_how_to_install(client, store_path):
    assert not store_path.exists()
    assert client.get("/").status_code == 200
    body = client.get("/partials/header/").content.decode()
    assert "Nothing captured yet" in body
    assert '"lockwatch.db.backends.sqlite3"' in body.replace("&quot;", '"')
    assert "lockwatch.middleware.LockwatchMiddleware" in body
    assert str(store_path) in body
    for name, text in (("busy", "No busy errors"), ("timeline", "No write-lock holds")):
        assert text in client.get(f"/partials/chart/{name}/").content.decode()
    assert "No store yet" in client.get("/partials/events/").content.decode()
    assert client.get("/export.csv").status_code == 404


def test_empty_store_says_how_to_install(client, store_path):
    from lockwatch import store

    store.connect(store_path).close()
    assert "Nothing captured yet" in client.get("/partials/header/").content.decode()
    assert "No events in this window" in client.get("/partials/events/").content.decode()


# -- mounted in a project: the user check ------------------------------------------


def user(**flags: bool) -> SimpleNamespace:
    base = {"is_authenticated": True, "is_active": True, "is_staff": False, "is_superuser": False}
    return SimpleNamespace(username="someone", **{**base, **flags})


ANONYMOUS = SimpleNamespace(is_authenticated=False, is_active=False, is_staff=False)


def only_alice(u) -> bool:
    return getattr(u, "username", "") == "alice"


@pytest.fixture
def mounted(store_path: Path, ids) -> Iterator[None]:
    with override_settings(
        ROOT_URLCONF=__name__, TEMPLATES=TEMPLATES, STATIC_URL="/static/",
        LOCKWATCH={"STORE": str(store_path)},
    ):  # fmt: skip
        yield


def call(url: str, who) -> object:
    request = RequestFactory().get(url)
    request.user = who
    match = resolve(request.path)
    return match.func(request, *match.args, **match.kwargs)


MOUNTED = ["/lockwatch/", "/lockwatch/events/1/", *(f"/lockwatch{u}" for u in PARTIALS)]


@pytest.mark.parametrize("url", MOUNTED)
def test_mounted_refuses_anonymous_and_non_staff(mounted, url):
    assert call(url, ANONYMOUS).status_code == 403
    assert call(url, user()).status_code == 403


@pytest.mark.parametrize("url", MOUNTED)
def test_mounted_admits_staff(mounted, url):
    assert call(url, user(is_staff=True)).status_code == 200


def test_mounted_page_points_at_its_websocket(mounted):
    page = call("/lockwatch/", user(is_staff=True))
    assert b'data-ws="/lockwatch/ws/"' in page.content
    assert b"log out" not in page.content


def test_mounted_access_check_is_configurable(store_path, ids):
    with override_settings(
        ROOT_URLCONF=__name__, TEMPLATES=TEMPLATES, STATIC_URL="/static/",
        LOCKWATCH={"STORE": str(store_path),
                   "ACCESS_CHECK": "tests.test_dashboard_views.only_alice"},
    ):  # fmt: skip
        alice = SimpleNamespace(username="alice", is_authenticated=True)
        assert call("/lockwatch/partials/header/", alice).status_code == 200
        assert call("/lockwatch/partials/header/", user(is_staff=True)).status_code == 403


def test_mounted_has_no_token_login(mounted):
    request = RequestFactory().post("/lockwatch/login/", {"token": "x"})
    request.user = user(is_staff=True)
    request._dont_enforce_csrf_checks = True
    match = resolve(request.path)
    with pytest.raises(Exception) as exc:
        match.func(request)
    assert type(exc.value).__name__ == "Http404"


def test_custom_window(client, ids):
    import time
    from urllib.parse import urlencode

    now = time.time()
    query = urlencode(
        {"window": "custom", "since": events.iso(now - 120), "until": events.iso(now)}
    )
    assert "7 events" in client.get(f"/partials/events/?{query}").content.decode()
    assert "0 events" in client.get("/partials/events/?window=custom&since=10s").content.decode()
    assert "7 events" in client.get("/partials/events/?since=2m").content.decode()
    page = client.get(f"/?{query}").content.decode()
    assert '<option value="custom" selected>' in page
    assert f'value="{events.iso(now - 120)}"' in page


def test_token_in_url_works_on_the_detail_page_too(server, ids):
    c = Client()
    response = c.get(f"/events/{ids['busy']}/?token={TOKEN}")
    assert response.status_code == 302 and response["Location"] == f"/events/{ids['busy']}/"
    assert c.get(response["Location"]).status_code == 200


def test_timeline_hover_text_cannot_carry_markup(client, store_path, ids):
    from tests.support.dashboard import insert

    now = __import__("time").time()
    row = dict(ts=now - 1, kind="query", duration_ms=1.0, hold_ms=1.0, pid=5, thread="T",
               call_site="<b>x</b>", sql="SELECT 1 WHERE a < 2")  # fmt: skip
    insert(store_path, [row])
    body = client.get("/partials/chart/timeline/").content.decode()
    assert "<b>x" not in body and "\\u003Cb\\u003Ex" not in body
    assert "&lt;b&gt;x" in body.replace("\\u0026", "&")
    assert "a &lt; 2" in body.replace("\\u0026", "&")


def timeline_text(fig: dict) -> list[str]:
    """Every string the timeline hands plotly to draw: lane labels, names, hover data."""
    shown = list(fig["layout"]["yaxis"]["categoryarray"])
    for trace in fig["data"]:
        shown += [y for y in trace.get("y") or [] if y is not None]
        shown += [c for row in trace.get("customdata") or [] for c in row if isinstance(c, str)]
        shown.append(trace.get("name") or "")
    return shown


def test_thread_names_are_text_in_the_timeline_lanes(client, store_path, ids):
    from tests.support.dashboard import insert

    # plotly draws a little HTML in tick labels: a thread named with a link became a
    # clickable link in the lane labels.
    link = '<a href="https://evil.example/">click</a>'
    now = __import__("time").time()
    insert(store_path, [
        dict(ts=now - 2, kind="query", duration_ms=1.0, hold_ms=1.0, pid=5, thread=link,
             call_site="x.py:1 in f", sql="INSERT INTO t VALUES (1)"),
        dict(ts=now - 1, kind="busy", classification="timeout", duration_ms=5.0, wait_ms=5.0,
             pid=6, thread="<b>bold</b>", call_site="y.py:2 in g", blocker_pid=5,
             blocker_thread=link, blocker_call_site="x.py:1 in f",
             blocker_context="command:<i>c</i>"),
    ])  # fmt: skip
    fig = figure(client.get("/partials/chart/timeline/"))
    assert [text for text in timeline_text(fig) if "<" in text or ">" in text] == []
    lanes = fig["layout"]["yaxis"]["categoryarray"]
    # plotly turns &lt; &gt; &amp; back into the characters, drawn as text.
    lane5 = 'command:&lt;i&gt;c&lt;/i&gt; · pid 5 · &lt;a href="https://evil.example/"&gt;click&lt;/a&gt;'
    assert lane5 in lanes
    assert "pid 6 · &lt;b&gt;bold&lt;/b&gt;" in lanes
    assert all("<" not in lane for lane in lanes)
    blocked_by = next(t for t in fig["data"] if t.get("name") == "blocked by")
    assert lane5 in blocked_by["y"]


def test_an_unknown_classification_is_drawn_as_text(client, store_path, ids):
    from tests.support.dashboard import insert

    now = __import__("time").time()
    insert(store_path, [dict(ts=now - 1, kind="busy", classification="<i>odd</i> & more",
                             duration_ms=5.0, wait_ms=5.0, pid=6, thread="T",
                             call_site="y.py:2 in g")])  # fmt: skip
    response = client.get("/partials/chart/timeline/")
    assert response.status_code == 200
    fig = figure(response)
    assert [text for text in timeline_text(fig) if "<" in text or ">" in text] == []
    assert "&lt;i&gt;odd&lt;/i&gt; &amp; more" in timeline_text(fig)


def test_a_file_that_is_not_a_store_is_503_not_500(client, store_path):
    store_path.write_bytes(b"this is not sqlite" * 100)
    response = client.get("/partials/header/")
    assert response.status_code == 503
    assert response.content.decode().startswith("lockwatch: the store cannot be read")
    assert client.get("/events/1/").status_code == 503


def test_event_detail_shows_the_split_the_stack_and_another_program(client, server):
    """An outside holder with its pid, the split of the wait, and the user's stack."""
    from tests.support.dashboard import insert

    split = [
        {"blocker": "outside (pid 4242)", "kind": "outside", "pid": 4242, "ms": 950.0},
        {"blocker": "shop/views.py:7 in v (pid 100, MainThread)", "kind": "holder", "pid": 100,
         "ms": 50.0},
    ]  # fmt: skip
    (busy,) = insert(
        server,
        [dict(ts=1_000.0, kind="busy", classification="timeout", duration_ms=1000.0,
              wait_ms=1000.0, call_site=WAITER, sql="INSERT", pid=200, db="/srv/db",
              blocker_pid=4242, blocker_context=events.OUTSIDE, blocker_call_site=events.OUTSIDE,
              blocker_split=json.dumps(split), blocker_same_thread=0, blockers=2,
              user_stack=f"{WAITER} < shop/views.py:83 in checkout")],
    )  # fmt: skip
    body = client.get(f"/events/{busy}/").content.decode()
    assert "another program</strong> (pid 4242)" in body
    assert "What the wait was behind" in body
    assert "outside (pid 4242)" in body and "950.0" in body
    assert "shop/views.py:83 in checkout" in body
    assert "Chain of blockers" in body and "for the write lock held by" not in body


def test_the_header_shows_who_holds_the_write_lock_right_now(client, server, tmp_path):
    """A management command holds the lock: the header names it while it holds, not after."""
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT, line_of
    from tests.support.servers import project_env

    commands = ROOT / "tests" / "project" / "shop" / "management" / "commands"
    env = project_env(tmp_path / "app.sqlite3", server)
    manage = [sys.executable, str(ROOT / "tests" / "project" / "manage.py")]
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [*manage, "hold_lock", "--seconds", "3", "--ready-file", str(ready)], cwd=ROOT, env=env
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        body = client.get("/partials/header/").content.decode()
        assert "Write lock held now" in body
        assert "command:hold_lock" in body and f"pid {holder.pid}" in body
        hold_line = line_of(commands / "hold_lock.py", "HOLD-LINE")
        assert f"hold_lock.py:{hold_line} in handle" in body
        assert str(tmp_path / "app.sqlite3") in body
        # Once it is longer than every stored hold (migrate's among them), the hold still
        # going is the worst so far: the header says so before it ends (it holds for 3 s).
        while "(still held)" not in body:
            assert holder.poll() is None, "the hold ended before the header called it the worst"
            time.sleep(0.1)
            body = client.get("/partials/header/").content.decode()
    finally:
        holder.wait(30)
    assert "Write lock held now" not in client.get("/partials/header/").content.decode()


def test_events_table_says_which_filters_are_on_and_how_to_clear_them(client, ids):
    body = client.get(f"/partials/events/?call_site={HOLDER}&kind=busy").content.decode()
    assert 'id="lw-active-filters"' in body and f"<code>{HOLDER}</code>" in body
    assert 'data-clear="call_site"' in body and 'data-clear="kind"' in body
    assert 'data-clear="all"' in body
    assert "lw-active-filters" not in client.get("/partials/events/").content.decode()
    # The blocker sits beside the call site, before the context and the SQL.
    heads = [h.split(">")[-1] for h in body.split("</th>")[:-1]]
    assert heads.index("blocker_call_site") == heads.index("call_site") + 1


def test_story_fills_every_kind(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    ids = story(path)
    conn = store.connect(path, readonly=True)
    kinds = {r[0] for r in conn.execute("SELECT kind FROM events")}
    assert kinds == set(events.KINDS)
    busy = conn.execute("SELECT * FROM events WHERE id = ?", (ids["busy"],)).fetchone()
    assert busy["blocker_call_site"] == HOLDER
