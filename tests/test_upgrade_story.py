"""An upgrade error, end to end: real threads on a real file, then its event page.

The page tells the story from what the transaction itself recorded: the read
that began it, then the write that failed while another transaction held the
lock.
"""

from __future__ import annotations

import html
import threading
import time
from pathlib import Path

from django.db import connections, transaction
from django.test import Client

from lockwatch.dashboard import auth
from tests.conftest import line_of, run_threads
from tests.project.shop.models import Item
from tests.support.dashboard import TOKEN, server_settings

HERE = Path(__file__)


def site(marker: str, function: str) -> str:
    return f"tests/{HERE.name}:{line_of(HERE, marker)} in {function}"


def test_the_event_page_tells_what_the_failed_transaction_read_first(lw, watched):
    db = watched()  # rollback journal, deferred transactions
    a_holds, b_read = threading.Event(), threading.Event()

    def holder() -> None:
        b_read.wait(5)
        with transaction.atomic(using=db):
            Item.objects.using(db).create(name="a")  # HOLDER-WRITE
            a_holds.set()
            time.sleep(0.3)
        connections[db].close()

    def upgrader() -> None:
        with transaction.atomic(using=db):
            Item.objects.using(db).filter(qty__gt=0).exists()  # FIRST-READ
            b_read.set()
            a_holds.wait(5)
            Item.objects.using(db).create(name="b")  # FAILED-WRITE
        connections[db].close()

    errors = run_threads(holder, upgrader)
    assert errors[0] is None and "locked" in str(errors[1])
    lw.settle()
    (busy,) = lw.events(kind="busy")
    assert busy["classification"] == "upgrade"

    auth.THROTTLE.clear()
    with server_settings(lw.store):
        client = Client()
        assert client.get(f"/?token={TOKEN}").status_code == 302
        page = html.unescape(client.get(f"/events/{busy['id']}/").content.decode())
    story = page[page.index("What its transaction did before it tried to write") :]
    story = story[: story.index("</section>")]
    first = story.index(site("FIRST-READ", "upgrader"))
    then = story.index(site("FAILED-WRITE", "upgrader"))
    held = story.index(site("HOLDER-WRITE", "holder"))
    assert first < then < held  # read, then the write, while the holder held the lock
    assert "upgrade" in story and "IMMEDIATE" in story
