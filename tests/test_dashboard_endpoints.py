"""Per endpoint and command, and a request's page (issue 14)."""

from __future__ import annotations

import re
import time

import pytest
from django.test import Client

from tests.support.dashboard import HOLDER, TOKEN, WAITER, insert

RESTOCK = "shop/tasks.py:9 in restock"
CREATE = "users/views.py:18 in create_user"


def row_cells(body: str, context: str) -> list[str]:
    """The text of each cell of the endpoints table's row for ``context``."""
    row = next(r for r in body.split("<tr")[1:] if f'data-context="{context}"' in r)
    return [
        re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    ]


@pytest.fixture
def create_user(store_path, ids):  # noqa: F811
    """Three POST /create_user/ requests: two fail with `upgrade` behind the restock batch."""
    t = time.time() - 20
    base = {"context": "request:POST /create_user/", "method": "POST", "path": "/create_user/",
            "thread": "MainThread", "db": "/srv/app/db.sqlite3"}  # fmt: skip
    blocked = {"blocker_pid": 300, "blocker_thread": "MainThread", "blocker_call_site": RESTOCK,
               "blocker_context": "command:restock"}  # fmt: skip
    rows = []
    for i, status in enumerate((500, 500, 200)):
        rid, at, pid = f"req-{i}", t + i, 400 + i
        rows += [
            dict(ts=at, kind="request", duration_ms=60.0, status=status, queries=3,
                 db_ms=20.0, busy_count=int(status == 500), request_id=rid, pid=pid, **base),
            dict(ts=at + 0.002, kind="query", duration_ms=150.0, call_site="users/views.py:15 in"
                 " create_user", sql='SELECT "auth_user"."id" FROM "auth_user"',
                 stmt_class="read", request_id=rid, pid=pid, **base),
            dict(ts=at + 0.01, kind="wait", duration_ms=40.0, wait_ms=40.0,
                 outcome="acquired" if status == 200 else "gave_up", call_site=CREATE,
                 sql='INSERT INTO "auth_user"', request_id=rid, pid=pid, **base, **blocked),
        ]  # fmt: skip
        if status == 500:
            rows.append(dict(ts=at + 0.05, kind="busy", classification="upgrade", duration_ms=0.1,
                             call_site=CREATE, sql='INSERT INTO "auth_user"', request_id=rid,
                             message="database is locked", pid=pid, **base, **blocked))  # fmt: skip
    got = insert(store_path, rows)
    return {"busy": got[3], "read": got[1], "request": got[0], "other": ids["busy"]}


def test_endpoints_table_counts_requests_failures_waits_and_the_worst_blocker(client, create_user):  # noqa: F811
    body = client.get("/partials/endpoints/").content.decode()
    cells = row_cells(body, "request:POST /create_user/")
    assert cells[0] == "POST /create_user/"
    # requests, then one column per classification present (timeout, upgrade), failed, wait
    assert cells[1] == "3"
    assert cells[2] == "" and cells[3] == "2"  # no timeout, 2 upgrade
    assert "67%" in cells[4] and "(2 of 3)" in cells[4]
    assert "120.0 ms" in cells[5] and "(3)" in cells[5]
    assert RESTOCK in cells[6] and "command:restock" in cells[6]
    # The command from the story: one run (its process), which got a busy error.
    command = row_cells(body, "command:sync_stock")
    assert command[1] == "1" and command[2] == "1" and command[3] == ""
    assert "100%" in command[4] and "(1 of 1)" in command[4] and HOLDER in command[6]
    # Worst first: the endpoint with two busy errors before the command with one.
    assert body.index("POST /create_user/") < body.index("command:sync_stock")
    link = re.search(r'href="([^"]*)" data-context="request:POST /create_user/"', body)
    assert link and "context=request%3APOST+%2Fcreate_user%2F" in link.group(1)
    assert link.group(1).endswith("#events")
    events = client.get("/partials/events/?context=request:POST /create_user/").content.decode()
    assert "11 events match" in events


def test_endpoints_refuses_bad_params_and_strangers(client, create_user):  # noqa: F811
    response = client.get("/partials/endpoints/?window=2h")
    assert response.status_code == 400 and response.content.startswith(b"lockwatch: window=")
    assert Client().get("/partials/endpoints/").status_code == 403
    assert (
        "No endpoint or command"
        in client.get(
            "/partials/endpoints/?window=custom&since=2000-01-01&until=2000-01-02"
        ).content.decode()
    )


def test_request_page_tells_the_request_in_order(client, create_user):  # noqa: F811
    detail = client.get(f"/events/{create_user['busy']}/").content.decode()
    assert f'href="/events/{create_user["busy"]}/request/"' in detail
    body = client.get(f"/events/{create_user['busy']}/request/").content.decode()
    assert "POST /create_user/" in body and "req-0" in body
    assert ">500<" in body and "1 busy error" in body
    order = [body.index(s) for s in ("users/views.py:15", "gave up", "upgrade</span>")]
    assert order == sorted(order)  # the read, its wait, then the busy error
    assert body.count(RESTOCK) == 2  # the blocker of the wait and of the busy error
    assert f'id="ev-{create_user["busy"]}"' in body and "focus" in body
    assert "+50.0" in body  # ms after the request began
    assert "req-1" not in body  # only this request's events
    # By id, within the window.
    assert "req-0" in client.get("/requests/req-0/").content.decode()
    assert client.get("/requests/req-9/").status_code == 404
    assert client.get("/requests/req-0/?window=nope").status_code == 400
    assert client.get("/requests/req-0/?page=0").status_code == 400
    assert client.get(f"/requests/{'x' * 65}/").status_code == 400


def test_request_page_for_events_without_a_request(client, create_user):  # noqa: F811
    response = client.get(f"/events/{create_user['other']}/request/")
    assert response.status_code == 404 and b"not" in response.content
    assert client.get("/events/99999999/request/").status_code == 404
    assert client.get(f"/events/{2**70}/request/").status_code == 404
    stranger = Client()
    assert stranger.get(f"/events/{create_user['busy']}/request/").status_code == 403
    assert stranger.get("/requests/req-0/").status_code == 403
    login = stranger.get(f"/requests/req-0/?token={TOKEN}")
    assert login.status_code == 302 and login["Location"] == "/requests/req-0/"
    assert WAITER not in client.get("/requests/req-0/").content.decode()
