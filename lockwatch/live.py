"""The live message: one per batch of events, for the dashboard's websocket.

Defined once here, for both paths that send it. The dashboard's relay tails the
store (no Redis needed). With a shared channel layer (channels-redis), each
target process's flusher also publishes its batches to ``TARGETS_GROUP`` right
after storing them (``lockwatch.pipeline.publish``), so the dashboard hears of
them without waiting for the tail. Both carry store ids; the browser drops a
sample event it has already shown.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, NotRequired, TypedDict

from lockwatch import events

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
