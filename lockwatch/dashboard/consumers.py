"""The dashboard's websocket: origin and access checks, then the relay's batches.

A handshake from another origin than the page's own is refused before it is
accepted (lockwatch.dashboard.origin); one that is accepted but not allowed gets a
fatal error frame and a 4403 close, as does an open socket whose session logs out.
The frames, both ways, are defined in lockwatch.dashboard.frames.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels import DEFAULT_CHANNEL_LAYER
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import InMemoryChannelLayer
from django.urls import NoReverseMatch, reverse

from lockwatch import live, store
from lockwatch.conf import get_config
from lockwatch.store import reading

from . import auth, frames, origin, queries, relay
from .relay import MESSAGE_TYPE

log = logging.getLogger("lockwatch.dashboard")

CLOSE_FORBIDDEN = 4403
CLOSE_NO_LAYER = 4500
CLOSE_UNREADABLE = 4503  # the store is not one this lockwatch can read
# How often an open socket checks that its session is still logged in: a file read
# standalone, a session and user query when mounted.
RECHECK_TOKEN = 1.0
RECHECK_MOUNTED = 5.0


def _shared(layer: Any) -> bool:
    """A layer other processes can reach (Redis), unlike the in-memory one."""
    return not isinstance(layer, InMemoryChannelLayer)


def _prefix() -> str | None:
    """The dashboard's own path, when it is mounted in the watched project.

    There its own requests may be captured; they are left out of the live
    counts, so a refresh never triggers the next one.
    """
    if auth.token_mode():
        return None  # the standalone server is not watched
    try:
        prefix = reverse("lockwatch:index")
    except NoReverseMatch:
        return None
    return prefix if prefix != "/" else None


class LiveConsumer(AsyncWebsocketConsumer):
    @property
    def channel_layer_alias(self) -> str:
        return get_config().channel_layer or DEFAULT_CHANNEL_LAYER

    async def connect(self) -> None:
        self.relay: relay.Relay | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.paused = False
        if not origin.allowed(self.scope):
            # Refused in the handshake (daphne answers 403): a page of another origin
            # learns nothing, not even why.
            await self.close()
            return
        await self.accept()
        decision = await auth.scope_allowed(self.scope)
        if not decision:
            await self.send_error(decision.reason, fatal=True)
            await self.close(code=CLOSE_FORBIDDEN)
            return
        if self.channel_layer is None:
            await self.send_error(
                "no channel layer: set CHANNEL_LAYERS (an InMemoryChannelLayer is enough)",
                fatal=True,
            )
            await self.close(code=CLOSE_NO_LAYER)
            return
        await self.channel_layer.group_add(relay.group_name(), self.channel_name)
        if _shared(self.channel_layer):
            # Target processes publish their batches here too (see lockwatch.live).
            await self.channel_layer.group_add(live.TARGETS_GROUP, self.channel_name)
        try:
            last_id = await self._last_id()
        except reading.UnreadableStore as exc:
            await self.send_error(str(exc), fatal=True)
            await self.close(code=CLOSE_UNREADABLE)
            return
        if decision.session_key is not None:
            self.watcher = asyncio.create_task(self._watch(decision))
        self.relay = relay.subscribe(
            get_config().store, self.channel_layer, _prefix(), start=last_id
        )
        await self.send_frame(frames.hello(last_id))

    async def _watch(self, decision: auth.Decision) -> None:
        """Close the socket once its session has logged out (or expired)."""
        interval = RECHECK_TOKEN if auth.token_mode() else RECHECK_MOUNTED
        while True:
            await asyncio.sleep(interval)
            try:
                if await auth.still_allowed(decision):
                    continue
            except Exception as exc:  # a database hiccup when mounted: look again later
                log.warning("lockwatch: cannot check a websocket's session: %r", exc)
                continue
            await self.send_error("logged out: this session has ended", fatal=True)
            await self.close(code=CLOSE_FORBIDDEN)
            return

    async def disconnect(self, code: int) -> None:
        watcher = getattr(self, "watcher", None)
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
        if getattr(self, "relay", None) is not None:
            await self.channel_layer.group_discard(relay.group_name(), self.channel_name)
            if _shared(self.channel_layer):
                await self.channel_layer.group_discard(live.TARGETS_GROUP, self.channel_name)
            relay.unsubscribe(self.relay)  # type: ignore[arg-type]  # checked just above
            self.relay = None

    # -- from the browser -------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.relay is None:
            return  # refused: nothing is served
        try:
            control = frames.parse(text_data)
        except frames.BadFrame as exc:
            await self.send_frame(frames.error(str(exc)))
            return
        if control.kind == "hello":
            await self._catch_up(control.after)
        elif control.kind == "pause":
            self.paused = True
        elif control.kind == "resume":
            self.paused = False
            await self._catch_up(control.after)
        else:
            await self.send_frame(frames.PONG)

    async def _catch_up(self, after: int | None) -> None:
        if after is None or self.relay is None:
            return
        message = await asyncio.to_thread(self.relay.catch_up, after)
        if message is not None:
            await self._forward(message)

    async def _last_id(self) -> int:
        def read() -> int:
            try:
                conn = reading.open_store(get_config().store)
            except reading.UnreadableStore:
                raise
            except store.StoreError:
                return 0  # no store yet
            try:
                return queries.last_id(conn)
            finally:
                conn.close()

        return await asyncio.to_thread(read)

    # -- from the relay ---------------------------------------------------------

    async def lockwatch_events(self, message: live.Message) -> None:
        if not self.paused:  # a paused page catches up from its last id on resume
            await self._forward(message)

    async def _forward(self, message: live.Message) -> None:
        await self.send_frame(frames.batch(message))

    # -- helpers ----------------------------------------------------------------

    async def send_frame(self, frame: frames.Frame) -> None:
        await self.send(text_data=frames.encode(frame))

    async def send_error(self, message: str, fatal: bool = False) -> None:
        await self.send_frame(frames.error(message, fatal))


assert MESSAGE_TYPE.replace(".", "_") == LiveConsumer.lockwatch_events.__name__
