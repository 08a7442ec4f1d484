"""Contention scenarios shared by tests that do not check their call-site lines."""

from __future__ import annotations

import threading
import time

from django.db import transaction

from tests.conftest import run_threads
from tests.project.shop.models import Item


def hold_then_write(db: str, hold: float) -> list[BaseException | None]:
    """Thread t0 writes in atomic() and holds the lock for ``hold`` s; t1 then writes."""
    locked = threading.Event()

    def holder() -> None:
        with transaction.atomic(using=db):  # SCENARIO-BEGIN
            Item.objects.using(db).create(name="held")  # SCENARIO-HOLD
            locked.set()
            time.sleep(hold)

    def writer() -> None:
        locked.wait(5)
        Item.objects.using(db).create(name="waiting")

    return run_threads(holder, writer)


def commit_behind_reader(db: str, read_for: float) -> list[BaseException | None]:
    """t0 reads in a transaction for ``read_for`` s; t1 writes and commits meanwhile."""
    reading = threading.Event()

    def reader() -> None:
        with transaction.atomic(using=db):
            Item.objects.using(db).count()
            reading.set()
            time.sleep(read_for)

    def writer() -> None:
        reading.wait(5)
        with transaction.atomic(using=db):
            Item.objects.using(db).create(name="w")

    return run_threads(reader, writer)
