"""The live publisher accounts for every batch: sent, or counted as missed."""

from __future__ import annotations

import asyncio
import threading
import time

from channels.layers import BaseChannelLayer
from django.test import override_settings

from lockwatch import events
from lockwatch.pipeline import publish

RELEASE = threading.Event()


class StuckLayer(BaseChannelLayer):
    """A layer whose sends hang until released, as a Redis that stopped answering."""

    sent: list[dict] = []

    async def group_send(self, group: str, message: dict) -> None:
        while not RELEASE.is_set():
            await asyncio.sleep(0.01)
        self.sent.append(message)


class Counters:
    def __init__(self) -> None:
        self.live_errors = 0
        self.live_missed = 0

    def log_once(self, what: str, exc: BaseException) -> None:
        pass


def rows(first_id: int, n: int) -> list[dict]:
    return [
        events.row(id=first_id + i, kind="query", ts=time.time(), context="command:x", sql="S")
        for i in range(n)
    ]


LAYERS = {"stuck": {"BACKEND": "tests.test_unit_live.StuckLayer"}}


def test_batches_unsent_at_exit_count_as_missed_once():
    RELEASE.clear()
    StuckLayer.sent = []
    counters = Counters()
    with override_settings(CHANNEL_LAYERS=LAYERS):
        publisher = publish.LayerPublisher("stuck", counters)
        publisher.TIMEOUT = 30.0  # the send outlives close(): close must account for it
        publisher(rows(1, 3))  # taken by the sender, then stuck
        time.sleep(0.2)
        publisher(rows(4, 2))  # still queued
        publisher.close(timeout=0.3)
        assert counters.live_missed == 5
        RELEASE.set()  # the stuck send completes after all: not counted twice
        publisher._thread.join(5)
    assert counters.live_missed == 5
    assert not publisher._thread.is_alive()


def test_batches_sent_before_exit_are_not_missed():
    RELEASE.set()
    StuckLayer.sent = []
    counters = Counters()
    with override_settings(CHANNEL_LAYERS=LAYERS):
        publisher = publish.LayerPublisher("stuck", counters)
        publisher(rows(1, 3))
        publisher(rows(4, 2))
        publisher.close(timeout=5.0)
    assert counters.live_missed == 0
    assert [m["count"] for m in StuckLayer.sent] == [3, 2]
