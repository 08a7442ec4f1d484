"""Context: requests (sync and async), tasks, commands and tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.test import AsyncClient, Client

import lockwatch
from tests.conftest import ROOT, line_of
from tests.project.shop.models import Item

VIEWS = ROOT / "tests" / "project" / "shop" / "views.py"


@pytest.fixture(scope="module")
def default_db():
    call_command("migrate", verbosity=0)


def test_sync_request_is_tagged_and_totalled(lw, default_db):
    response = Client().get("/write/", HTTP_X_REQUEST_ID="req-123")
    assert response.status_code == 200
    (query,) = [q for q in lw.events(kind="query") if q["stmt_class"] == "write"]
    assert query["context"] == "request:GET /write/"
    assert query["request_id"] == "req-123"
    assert query["method"] == "GET"
    assert query["path"] == "/write/"
    assert query["view"] == "write/ (write)"
    line = line_of(VIEWS, "SYNC-VIEW-LINE")
    assert query["call_site"] == f"tests/project/shop/views.py:{line} in write"
    assert query["hold_ms"] is not None  # an autocommit write holds the lock briefly
    assert query["rows"] is None  # INSERT ... RETURNING: not known at execute time
    (request,) = lw.events(kind="request")
    assert request["status"] == 200
    assert request["queries"] == 1
    assert request["busy_count"] == 0
    assert request["db_ms"] > 0


def test_async_view_is_tagged_with_its_task(lw, default_db):
    async def go():
        return await AsyncClient().get("/write-async/")

    response = asyncio.run(go())
    assert response.status_code == 200
    (query,) = [q for q in lw.events(kind="query") if q["stmt_class"] == "write"]
    assert query["context"] == "request:GET /write-async/"
    assert query["task"] and query["task"].startswith("Task-")
    line = line_of(VIEWS, "ASYNC-VIEW-LINE")
    assert query["call_site"] == f"tests/project/shop/views.py:{line} in _create"
    assert query["thread"] != "MainThread"  # it ran in sync_to_async's thread


def test_named_task_through_sync_to_async(lw, default_db):
    async def job():
        with lockwatch.tag("job:import"):
            await sync_to_async(Item.objects.create)(name="from-task")

    async def main():
        await asyncio.create_task(job(), name="import-task")

    asyncio.run(main())
    (query,) = [q for q in lw.events(kind="query") if q["stmt_class"] == "write"]
    assert query["task"] == "import-task"
    assert query["context"] == "job:import"


def test_outside_any_request_the_test_names_itself(lw, default_db):
    Item.objects.create(name="x")
    (query,) = [q for q in lw.events(kind="query") if q["stmt_class"] == "write"]
    assert query["context"] == (
        "test:tests/test_capture_context.py::test_outside_any_request_the_test_names_itself"
    )


def test_program_and_command_labels():
    from lockwatch.capture.context import _program_label

    assert _program_label(["manage.py", "import_batch", "--x"]) == "command:import_batch"
    assert _program_label(["/srv/app/manage.py", "runserver"]) == "command:runserver"
    assert _program_label(["/usr/bin/gunicorn", "app.wsgi"]) == "program:gunicorn"
    assert _program_label(["manage.py", "--help"]) == "program:manage.py"


def test_rows_changed_by_a_write(lw, watched):
    db = watched()
    Item.objects.using(db).bulk_create([Item(name="a"), Item(name="b"), Item(name="c")])
    Item.objects.using(db).filter(name__in=["a", "b"]).update(qty=2)
    (update,) = [q for q in lw.events(kind="query") if q["sql"].startswith("UPDATE")]
    assert update["rows"] == 2


def test_atomic_requests_transaction_begins_at_the_view(lw, default_db):
    from django.db import connections

    connections["default"].settings_dict["ATOMIC_REQUESTS"] = True
    try:
        assert Client().get("/read-then-write/").status_code == 200
    finally:
        connections["default"].settings_dict["ATOMIC_REQUESTS"] = False
    (txn,) = lw.events(kind="transaction")
    line = line_of(VIEWS, "def read_then_write")
    assert txn["call_site"] == f"tests/project/shop/views.py:{line} in read_then_write"
    assert txn["context"] == "request:GET /read-then-write/"
    assert txn["lock_call_site"].startswith("tests/project/shop/views.py:")
    assert txn["statements"] >= 3  # BEGIN, the count, the insert


def test_explicit_atomic_keeps_its_own_line(lw, default_db):
    from django.db import transaction

    with transaction.atomic():  # MY-ATOMIC
        Item.objects.create(name="x")
    (txn,) = lw.events(kind="transaction")
    here = line_of(Path(__file__), "MY-ATOMIC")
    assert txn["call_site"] == (
        f"tests/test_capture_context.py:{here} in test_explicit_atomic_keeps_its_own_line"
    )


def test_the_mounted_dashboard_is_not_recorded(lw, default_db):
    from django.contrib.auth.models import User

    User.objects.filter(username="staff").delete()
    staff = User.objects.create_user("staff", password="x", is_staff=True)
    client = Client()
    client.force_login(staff)
    lw.flush()
    before = len(lw.rows())
    assert client.get("/lockwatch/").status_code == 200  # session and user queries
    assert len(lw.rows()) == before
    assert client.get("/write/").status_code == 200
    assert len(lw.rows()) > before


def test_quick_reads_are_counted_not_recorded(lw, watched):
    from django.test import override_settings

    from lockwatch import conf, pipeline
    from lockwatch.capture.context import Context, bind

    db = watched()
    with bind(Context(label="request:GET /r", request_id="r1")) as ctx:
        for _ in range(5):
            Item.objects.using(db).filter(pk=1).exists()
    assert ctx.queries == 5 and ctx.db_time > 0
    assert [q for q in lw.events(kind="query") if q["stmt_class"] == "read"] == []

    pipeline.shutdown()
    pipeline.reset()
    with override_settings(LOCKWATCH={"STORE": str(lw.store), "SLOW_QUERY_MS": 0}):
        conf.reset()
        db = watched()  # a new connection picks up the setting
        Item.objects.using(db).filter(pk=1).exists()
        reads = [q for q in lw.events(kind="query") if q["stmt_class"] == "read"]
    conf.reset()
    assert len(reads) == 1  # as slow as the threshold: recorded, with its call site
    assert reads[0]["call_site"].startswith("tests/test_capture_context.py:")
