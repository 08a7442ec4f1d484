"""Publishing from a target's flusher: each stored batch, through a shared channel layer.

The message is ``live.Message`` (defined once in ``lockwatch.live``); the dashboard
joins ``live.TARGETS_GROUP`` to hear it without waiting for its tail of the store.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Any

from lockwatch.live import TARGETS_GROUP, Message, summarise


def layer_alias() -> str | None:
    """The channel layer to publish to: LOCKWATCH["CHANNEL_LAYER"], or a Redis default."""
    from django.conf import settings

    from lockwatch.conf import get_config

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
