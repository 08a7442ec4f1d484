"""The holder table seen from outside capture: who holds each write lock now, who waits.

The dashboard's "held now", the metrics and the alerts read it; none of them ever
creates the table (``holders.open_reader``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

from lockwatch import holders
from lockwatch.holders import COMMITTING, HOLDING, STATE_NAMES, Holder


class HeldNow(NamedTuple):
    """A database's write lock as the table shows it now (the dashboard's "held now")."""

    db_key: int
    holder: Holder
    state: str  # holding, waiting for readers, or running (may hold it)
    age: float  # seconds since it took the lock (or began the statement)
    abandoned: bool  # its process is gone


class WaitingNow(NamedTuple):
    """A connection waiting for a database's write lock now (the dashboard's "held now")."""

    db_key: int
    waiter: Holder
    waited: float  # seconds since its statement began: its wait so far


def held_now(store: Path) -> list[HeldNow]:
    """Who holds a write lock now: the longest-held first; [] when there is no table."""
    table = holders.open_reader(store)
    if table is None:
        return []
    try:
        now = time.time()
        out = [
            HeldNow(h.db, h, STATE_NAMES[h.state], max(now - h.since, 0.0), dead)
            for h, dead in table.snapshot()
            if h.state in (HOLDING, COMMITTING)
        ]
    finally:
        table.close()
    return sorted(out, key=lambda x: -x.age)


def waiting_now(store: Path, slack: float = 0.5) -> list[WaitingNow]:
    """Who waits for a write lock now (``Table.waiting``): the longest wait first; []
    when there is no table."""
    table = holders.open_reader(store)
    if table is None:
        return []
    try:
        now = time.time()
        out = [WaitingNow(h.db, h, max(now - h.since, 0.0)) for h in table.waiting(slack)]
    finally:
        table.close()
    return sorted(out, key=lambda x: -x.waited)
