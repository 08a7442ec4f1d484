"""10. What a wait costs: the waiter's CPU for a ``create()`` that waits for the lock.

Each alternative (plain Django, lockwatch) is a worker process with its own WAL file.
For a waited trial this process takes that file's write lock with BEGIN IMMEDIATE
(plain ``sqlite3``), asks the worker for one ``create()`` inside a request, sleeps for
the hold and commits; the worker's insert waits in its busy handler (SQLite's default
for plain, lockwatch's own) and then runs. Trials without a hold are the baseline.
The worker reports the CPU time of the request's thread while the create ran, and of
the whole process over the request and the flush after it (lockwatch's flusher
included). Alternatives take turns, the first one rotating; the added figures are
medians of per-trial paired differences.

Why: under contention lockwatch's added CPU per request grows with the waits per
request (benchmark 8); this gives the cost of one wait.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from .core import Options, Result, Table, fmt
from .stats import median, rotate
from .workers import Worker

ALTERNATIVES = ("plain", "lockwatch")
HOLDS_MS = (0, 10, 50)


def run(opts: Options) -> Result:
    trials = 4 if opts.quick else 60
    workers = {name: Worker(name, name, opts.workdir) for name in ALTERNATIVES}
    holders: dict[str, sqlite3.Connection] = {}
    got: dict[tuple[int, str], list[dict[str, float]]] = {
        (h, n): [] for h in HOLDS_MS for n in ALTERNATIVES
    }
    i = 0
    try:
        for name, w in workers.items():
            w.ask(cmd="setup")
            holders[name] = sqlite3.connect(w.db, isolation_level=None, timeout=0)
            w.ask(cmd="timed_create", i=i)  # warm: the first insert compiles and caches
            i += 1
        for t in range(trials):
            for hold in HOLDS_MS:
                for name in rotate(list(ALTERNATIVES), t):
                    i += 1
                    got[hold, name].append(_trial(holders[name], workers[name], hold / 1e3, i))
    finally:
        for w in workers.values():
            w.close()
        for h in holders.values():
            h.close()
    rows: list[list[Any]] = []
    added: dict[int, float] = {}
    for hold in HOLDS_MS:
        p, lw = got[hold, "plain"], got[hold, "lockwatch"]
        thread = median([a["thread_s"] - b["thread_s"] for a, b in zip(lw, p, strict=True)]) * 1e6
        cpu = median([a["cpu_s"] - b["cpu_s"] for a, b in zip(lw, p, strict=True)]) * 1e6
        added[hold] = cpu
        rows.append([
            "no wait" if hold == 0 else f"{hold} ms",
            fmt(median([r["wall_s"] for r in lw]) * 1e3, 1),
            fmt(median([r["thread_s"] for r in p]) * 1e6),
            fmt(median([r["thread_s"] for r in lw]) * 1e6),
            f"{thread:+.0f}",
            fmt(median([r["cpu_s"] for r in p]) * 1e6),
            fmt(median([r["cpu_s"] for r in lw]) * 1e6),
            f"{cpu:+.0f}",
        ])  # fmt: skip
    per_wait = {h: added[h] - added[0] for h in HOLDS_MS if h}
    res = Result()
    res.method = [
        f"{trials} trials per hold ({', '.join(f'{h} ms' for h in HOLDS_MS)}; 0 = no wait),"
        " alternatives taking turns with the first rotating; one create() per trial, inside"
        " a request through Django's WSGIHandler; the holder is plain sqlite3 in the driver.",
        "thread CPU: `time.thread_time()` around the create in the request's thread (the"
        " busy handler runs there); process CPU: `time.process_time()` over the request and"
        " the flush after it. Added = median of per-trial lockwatch − plain.",
    ]
    res.tables.append(Table(
        ["hold", "lockwatch wall ms", "plain thread µs", "lockwatch thread µs",
         "thread added µs", "plain process µs", "lockwatch process µs", "process added µs"],
        rows, "one create(), medians over trials",
    ))  # fmt: skip
    res.summary = (
        "a wait adds "
        + ", ".join(f"{v:+.0f} µs (hold {h} ms)" for h, v in per_wait.items())
        + " of CPU beyond a create() that did not wait"
    )
    res.data = {
        "trials": {f"{h}:{n}": v for (h, n), v in got.items()},
        "added_cpu_us": added,
        "per_wait_us": per_wait,
    }
    return res


def _trial(holder: sqlite3.Connection, worker: Worker, hold: float, i: int) -> dict[str, float]:
    if not hold:
        return worker.ask(cmd="timed_create", i=i)
    holder.execute("BEGIN IMMEDIATE")
    worker.send(cmd="timed_create", i=i)
    time.sleep(hold)
    holder.execute("COMMIT")
    return worker.receive()
