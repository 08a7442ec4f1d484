"""The live message: one per batch of events, for the dashboard's websocket.

Two paths send it. The dashboard's relay tails the store (no Redis needed).
With a shared channel layer (channels-redis), each target process's flusher
also publishes its batches to ``TARGETS_GROUP`` right after storing them, so
the dashboard hears of them without waiting for the tail. Both carry store
ids; the browser drops a sample event it has already shown.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, NotRequired, TypedDict

from . import events

log = logging.getLogger("lockwatch")

MESSAGE_TYPE = "lockwatch.events"  # routed to LiveConsumer.lockwatch_events
TARGETS_GROUP = "lockwatch-targets"
SAMPLE = {"busy": 40, "wait": 20, "hold": 20}
SQL_PREVIEW = 300

# Columns sent to the browser for an event: a subset of the schema.
PAYLOAD: tuple[str, ...] = (
    "id", "ts", "kind", "classification", "duration_ms", "wait_ms", "hold_ms", "sql",
    "call_site", "context", "pid", "thread", "blocker_pid", "blocker_call_site",
    "blocker_context", "blocker_thread", "blocker_held_ms", "outcome", "lock_call_site",
    "lock_ts", "end", "capture_mode", "error_name",
)  # fmt: skip
assert set(PAYLOAD) <= events.INDEX.keys()

Row = sqlite3.Row | dict[str, Any]


class Batch(TypedDict):
    """A batch of stored events, summarised: what the relay and the flusher publish."""

    first_id: int | None
    last_id: int | None
    count: int  # events in the batch (the dashboard's own requests aside)
    own: int  # the dashboard's own requests, left out
    kinds: dict[str, int]
    busy: dict[str, int]  # busy errors by classification
    span: list[float | None]  # [first ts, last ts]
    events: list[dict[str, Any]]  # a bounded sample, PAYLOAD columns
    sent: float
    catch_up: NotRequired[bool]  # the answer to a client's "after"
    missed_before: NotRequired[int]  # a target's publisher: what its live path missed so far


class Message(Batch):
    """A batch on the channel layer: ``type`` routes it to the consumer's handler."""

    type: str  # MESSAGE_TYPE


def payload(row: Row, sql_preview: int = SQL_PREVIEW) -> dict[str, Any]:
    out = {name: row[name] for name in PAYLOAD}
    if out["sql"] and len(out["sql"]) > sql_preview:
        out["sql"] = out["sql"][:sql_preview] + "…"
    return out


def _own(context: str | None, prefix: str | None) -> bool:
    """Is this the dashboard's own request (when mounted in the watched project)?"""
    if not prefix or not context or not context.startswith("request:"):
        return False
    _, _, path = context.partition(" ")
    return path.startswith(prefix)


def summarise(rows: Sequence[Row], prefix: str | None = None) -> Message:
    """One websocket message for many events: counts, and a bounded sample."""
    kinds: Counter[str] = Counter()
    busy: Counter[str] = Counter()
    own = 0
    picked: dict[str, list[Row]] = {"busy": [], "wait": [], "hold": []}
    first_ts = last_ts = None
    for row in rows:
        if _own(row["context"], prefix):
            own += 1
            continue
        kinds[row["kind"]] += 1
        ts = row["ts"]
        first_ts = ts if first_ts is None else min(first_ts, ts)
        last_ts = ts if last_ts is None else max(last_ts, ts)
        if row["kind"] == "busy":
            busy[row["classification"] or "other"] += 1
            picked["busy"].append(row)
        elif row["kind"] == "wait":
            picked["wait"].append(row)
        elif row["hold_ms"] is not None:
            picked["hold"].append(row)
    sample = picked["busy"][-SAMPLE["busy"] :]  # the newest busy errors
    sample += sorted(picked["wait"], key=lambda r: r["wait_ms"] or 0.0)[-SAMPLE["wait"] :]
    sample += sorted(picked["hold"], key=lambda r: r["hold_ms"] or 0.0)[-SAMPLE["hold"] :]
    sample.sort(key=lambda r: r["id"] or 0)
    ids = [r["id"] for r in rows if r["id"] is not None]
    return {
        "type": MESSAGE_TYPE,
        "first_id": min(ids) if ids else None,
        "last_id": max(ids) if ids else None,
        "count": sum(kinds.values()),
        "own": own,
        "kinds": dict(kinds),
        "busy": dict(busy),
        "span": [first_ts, last_ts],
        "events": [payload(r) for r in sample],
        "sent": time.time(),
    }


# -- publishing from the target's flusher ----------------------------------------


def layer_alias() -> str | None:
    """The channel layer to publish to: LOCKWATCH["CHANNEL_LAYER"], or a Redis default."""
    from django.conf import settings

    from .conf import get_config

    alias = get_config().channel_layer
    if alias:
        return alias
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    backend = str(layers.get("default", {}).get("BACKEND", ""))
    return "default" if backend.startswith("channels_redis.") else None


class LayerPublisher:
    """A flusher sink: sends each stored batch through a channel layer.

    The layer is async and may be down, so sending happens on a thread with
    its own event loop, fed by a small queue. A full queue, an error or a
    timeout counts the batch's events as missed by the live path; the flusher
    never waits. Redis coming back is picked up on the next send.
    """

    QUEUE = 64
    TIMEOUT = 1.0

    def __init__(self, alias: str, counters: Any) -> None:
        self.alias = alias
        self.counters = counters
        self._queue: queue.Queue[Message | None] = queue.Queue(self.QUEUE)
        # The batch being sent; whoever takes it (sender or close) accounts for it.
        self._sending: Message | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="lockwatch-live", daemon=True)
        self._thread.start()

    def __call__(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        message = summarise(rows)
        message["missed_before"] = self.counters.live_missed
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self._missed(message, "the live queue is full")

    def _missed(self, message: Message, why: str | BaseException) -> None:
        self.counters.live_errors += 1
        self.counters.live_missed += message["count"]
        if isinstance(why, BaseException):
            self.counters.log_once("live publish", why)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (at exit: a short command's last batch), within ``timeout``.

        What is still unsent when time is up counts as missed, the batch being
        sent included: nothing confirms it arrived.
        """
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        if not self._thread.is_alive():
            return
        with self._lock:
            unsent, self._sending = [self._sending], None
        while True:
            try:
                unsent.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self._queue.put_nowait(None)  # the sender stops once its send returns
        for message in unsent:
            if message is not None:
                self._missed(message, "not sent before exit")

    def _take(self, message: Message) -> bool:
        """True if ``message`` was still ours to account for (close did not take it)."""
        with self._lock:
            mine = self._sending is message
            self._sending = None
        return mine

    def _run(self) -> None:
        from channels.layers import get_channel_layer

        loop = asyncio.new_event_loop()
        try:
            layer = get_channel_layer(self.alias)
            while True:
                message = self._queue.get()
                if message is None:
                    return
                self._sending = message
                try:
                    loop.run_until_complete(
                        asyncio.wait_for(layer.group_send(TARGETS_GROUP, message), self.TIMEOUT)
                    )
                    self._take(message)
                except Exception as exc:  # Redis down, slow or refusing
                    if self._take(message):
                        self._missed(message, exc)
        except Exception as exc:
            self.counters.live_errors += 1
            self.counters.log_once("live publisher", exc)
        finally:
            loop.close()


def sinks(counters: Any) -> list[Any]:
    """The live sinks for this process's flusher, if a shared layer is configured."""
    try:
        alias = layer_alias()
        return [LayerPublisher(alias, counters)] if alias else []
    except Exception as exc:
        counters.live_errors += 1
        counters.log_once("live publisher setup", exc)
        return []
