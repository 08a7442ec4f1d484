"""The dashboard websocket's frames, both ways, defined once.

To the browser: ``hello`` (the store's last id and the payload columns), ``batch``
(a relay message: ``live.Batch``), ``error`` (one line; a ``fatal`` one is followed
by a close) and ``pong``. From the browser: ``hello`` (with ``after``, its last id,
to catch up after a reconnect), ``pause``, ``resume`` (with ``after``) and ``ping``,
each a JSON object under ``MAX_FRAME`` bytes; anything else is a ``BadFrame`` whose
message says what a frame must be.
"""

from __future__ import annotations

import json
from typing import Any, Literal, NamedTuple, TypedDict, cast

from lockwatch import live

MAX_FRAME = 4096  # the browser only sends small control frames
KINDS = ("hello", "pause", "resume", "ping")


class Hello(TypedDict):
    type: Literal["hello"]
    last_id: int
    columns: list[str]


class BatchFrame(live.Batch):
    type: Literal["batch"]


class Error(TypedDict):
    type: Literal["error"]
    message: str
    fatal: bool


class Pong(TypedDict):
    type: Literal["pong"]


Frame = Hello | BatchFrame | Error | Pong


def hello(last_id: int) -> Hello:
    return {"type": "hello", "last_id": last_id, "columns": list(live.PAYLOAD)}


def batch(message: live.Message) -> BatchFrame:
    frame: dict[str, Any] = {k: v for k, v in message.items() if k != "type"}
    frame["type"] = "batch"
    return cast(BatchFrame, frame)


def error(message: str, fatal: bool = False) -> Error:
    return {"type": "error", "message": message, "fatal": fatal}


PONG: Pong = {"type": "pong"}


class Control(NamedTuple):
    """A frame from the browser."""

    kind: Literal["hello", "pause", "resume", "ping"]
    after: int | None  # its last event id (hello, resume)


class BadFrame(ValueError):
    """A frame the browser should not have sent; the message says what is wrong."""


def parse(text: str | None) -> Control:
    if text is None or len(text) > MAX_FRAME:
        raise BadFrame("frames must be JSON text under 4 KB")
    try:
        content = json.loads(text)
    except (ValueError, RecursionError):  # 4 KB of "[" nests past the recursion limit
        raise BadFrame("frames must be JSON objects") from None
    if not isinstance(content, dict):
        raise BadFrame("frames must be JSON objects")
    kind = content.get("type")
    after = content.get("after")
    if after is not None and (isinstance(after, bool) or not isinstance(after, int)):
        raise BadFrame("after must be an event id (an integer)")
    if kind not in KINDS:
        raise BadFrame(f"unknown frame type {kind!r}; use hello, pause, resume or ping")
    return Control(kind, after)


def encode(frame: Frame) -> str:
    return json.dumps(frame, separators=(",", ":"))
