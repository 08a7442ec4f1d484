"""Contention scenarios shared by tests that do not check their call-site lines."""

from __future__ import annotations

import threading
import time

from django.db import OperationalError, transaction

import lockwatch
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


def short_writes(db: str, threads: int, seconds: float) -> list[BaseException | None]:
    """``threads`` threads make autocommit writes at one line, back to back, for ``seconds``."""
    deadline = time.monotonic() + seconds

    def writer() -> None:
        while time.monotonic() < deadline:
            Item.objects.using(db).create(name="short")  # SCENARIO-SHORT

    return run_threads(*[writer] * threads)


def reads_behind_commit(db: str, read_for: float, readers: int) -> list[BaseException | None]:
    """Under the rollback journal: t0 reads in a transaction for ``read_for`` s; t1's COMMIT
    waits for it while holding PENDING, which blocks ``readers`` new readers meanwhile."""
    reading, committing = threading.Event(), threading.Event()

    def long_reader() -> None:
        with transaction.atomic(using=db):
            Item.objects.using(db).count()
            reading.set()
            time.sleep(read_for)

    def writer() -> None:
        reading.wait(5)
        with transaction.atomic(using=db):
            Item.objects.using(db).create(name="w")  # SCENARIO-COMMITTER
            committing.set()

    def reader() -> None:
        committing.wait(5)
        time.sleep(read_for / 4)  # the COMMIT is waiting for t0 by now
        Item.objects.using(db).count()  # SCENARIO-BLOCKED-READ

    return run_threads(long_reader, writer, *[reader] * readers)


def two_connections_in_one_thread(db: str, other: str) -> list[BaseException | None]:
    """One thread writes on ``db`` in atomic(), then on ``other`` (the same file, another
    connection) before committing: the second waits for the first, which cannot commit."""

    def both() -> None:
        with lockwatch.tag("command:import"), transaction.atomic(using=db):
            Item.objects.using(db).create(name="first")  # SCENARIO-FIRST-CONNECTION
            Item.objects.using(other).create(name="second")  # SCENARIO-SECOND-CONNECTION

    return run_threads(both)


def retry_until_written(db: str, hold: float, pause: float) -> list[BaseException | None]:
    """t0 holds the write lock for ``hold`` s; t1 writes, and on 'database is locked' waits
    ``pause`` s and tries again, until it succeeds."""
    locked = threading.Event()

    def holder() -> None:
        with transaction.atomic(using=db):
            Item.objects.using(db).create(name="held")  # SCENARIO-RETRY-HOLDER
            locked.set()
            time.sleep(hold)

    def retrying() -> None:
        locked.wait(5)
        for _ in range(20):
            try:
                Item.objects.using(db).create(name="retried")  # SCENARIO-RETRIED
                return
            except OperationalError:
                time.sleep(pause)

    return run_threads(holder, retrying)
