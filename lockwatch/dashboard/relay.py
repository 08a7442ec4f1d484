"""The live path without Redis: tail the store, send batches to this process's consumers.

One relay task runs per event loop while at least one websocket is open. Every
``INTERVAL`` it reads the rows with ``id >`` the last one seen (in a thread, as
SQLite blocks), summarises them into one message (counts per kind and
classification plus a small sample of the notable events) and ``group_send``s
it. An event is stored whole (capture names a wait's blocker as it waits), so
each is sent once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from lockwatch import store
from lockwatch.live import MESSAGE_TYPE, Message, summarise
from lockwatch.store import reading

__all__ = ["MESSAGE_TYPE", "Relay", "group_name", "subscribe", "summarise", "unsubscribe"]
from . import queries

log = logging.getLogger("lockwatch.dashboard")

INTERVAL = 0.1  # one indexed read per tick; well inside the 1 s budget
MAX_ROWS = 20_000  # per poll; a backlog is read over the next polls, without sleeping


def group_name() -> str:
    # Per process: with a shared layer (Redis) every dashboard process runs its own
    # relay, and each must reach only its own consumers.
    return f"lockwatch-live-{os.getpid()}"


class Relay:
    def __init__(
        self, path: Path, layer: Any, group: str, prefix: str | None = None,
        interval: float = INTERVAL,
    ) -> None:  # fmt: skip
        self.path = Path(path)
        self.layer = layer
        self.group = group
        self.prefix = prefix
        self.interval = interval
        self.last: int | None = None
        self.subscribers = 0
        self.task: asyncio.Task[None] | None = None
        self._conn: sqlite3.Connection | None = None
        self._inode: int | None = None
        # Polls run in worker threads; closing the connection under one would crash
        # SQLite, so polls and close take turns.
        self._lock = threading.Lock()
        self._stopped = False
        self._last_warning = ""
        # id -> first seen, for waits and busy errors still without a blocker.

    # -- reading (in a worker thread) ------------------------------------------

    def _connect(self) -> sqlite3.Connection | None:
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            self._close()
            return None
        if self._conn is not None and inode != self._inode:
            self._close()  # the store was replaced: start over on the new file
            self.last = 0
        if self._conn is None:
            try:
                self._conn = reading.open_store(self.path)
            except reading.UnreadableStore as exc:  # a newer lockwatch's, or not a store
                self._warn(str(exc))
                return None
            except (store.StoreError, sqlite3.Error):
                return None
            self._inode = inode
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def start_after(self, last_id: int) -> None:
        """Relay what is stored after ``last_id``, unless a poll has already set where
        to start: a relay that starts at the tail at its first poll would skip what was
        stored in between."""
        with self._lock:  # (a poll in flight holds it for milliseconds)
            if self.last is None:
                self.last = last_id

    def poll(self) -> tuple[Message | None, bool]:
        """(a message or None, whether more rows are waiting)."""
        with self._lock:
            if self._stopped:
                return None, False
            return self._poll()

    def _poll(self) -> tuple[Message | None, bool]:
        conn = self._connect()
        if conn is None:
            if self.last is None:
                self.last = 0  # no store yet: everything it will hold is news
            return None, False
        try:
            if self.last is None:
                self.last = queries.last_id(conn)  # history is the pages' job; start at the tail
                return None, False
            rows = queries.since_id(conn, self.last, MAX_ROWS)
            if not rows and queries.last_id(conn) < self.last:
                self.last = 0  # ids went backwards: the store was emptied
                return None, False
        except sqlite3.Error as exc:
            self._warn(f"cannot read the store: {exc}")
            self._close()
            return None, False
        if not rows:
            return None, False
        self.last = rows[-1]["id"]
        return summarise(rows, self.prefix), len(rows) == MAX_ROWS

    def catch_up(self, after: int) -> Message | None:
        """What a client missed since ``after`` (its last id), summarised like a batch."""
        conn = None
        try:
            conn = reading.open_store(self.path)
            last = queries.last_id(conn)
            if last <= after:
                return None
            start = max(after, last - MAX_ROWS)
            message = summarise(queries.since_id(conn, start, MAX_ROWS), self.prefix)
            message["catch_up"] = True
            message["first_id"] = after + 1
            return message
        except (store.StoreError, sqlite3.Error):
            return None
        finally:
            if conn is not None:
                conn.close()

    # -- the task --------------------------------------------------------------

    async def run(self) -> None:
        while True:
            more = False
            try:
                message, more = await asyncio.to_thread(self.poll)
                if message is not None:
                    await self.layer.group_send(self.group, message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep relaying; one bad poll is not fatal
                self._warn(repr(exc))
            if not more:
                await asyncio.sleep(self.interval)

    def _warn(self, message: str) -> None:
        # Polls repeat ten times a second: say each distinct problem once.
        if message != self._last_warning:
            self._last_warning = message
            log.warning("lockwatch relay: %s", message)

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
        with self._lock:  # waits for a poll in flight (milliseconds)
            self._stopped = True
            self._close()


_relays: dict[int, tuple[asyncio.AbstractEventLoop, Relay]] = {}


def subscribe(path: Path, layer: Any, prefix: str | None, start: int | None = None) -> Relay:
    """The running loop's relay, started on first use.

    ``start``: the last id the subscriber has already told its client of. A new relay
    starts after it, not at the tail at its first poll: an event stored between the
    two would otherwise reach no one.
    """
    loop = asyncio.get_running_loop()
    entry = _relays.get(id(loop))
    if entry is None or entry[0] is not loop or entry[1].path != Path(path):
        if entry is not None:
            entry[1].stop()
        relay = Relay(path, layer, group_name(), prefix)
        _relays[id(loop)] = (loop, relay)
    else:
        relay = entry[1]
    if start is not None:
        relay.start_after(start)
    relay.subscribers += 1
    if relay.task is None or relay.task.done():
        relay.task = loop.create_task(relay.run(), name="lockwatch-relay")
    return relay


def unsubscribe(relay: Relay) -> None:
    relay.subscribers -= 1
    if relay.subscribers <= 0:
        relay.stop()
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
            if _relays.get(id(loop), (None, None))[1] is relay:
                del _relays[id(loop)]
