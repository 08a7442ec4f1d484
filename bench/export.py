"""5. CSV export: 1M stored events, seconds and peak RSS, and RSS flat in the size.

The store is filled quickly: a pool of realistic rows built with ``lockwatch.events.row``
(queries, transactions, waits, busy errors, requests), bulk-inserted with new timestamps
into a store made by ``lockwatch.store.connect`` (so it has the real schema and indexes).
Then ``python -m lockwatch export --store … -o /dev/null`` runs in a subprocess, timed,
and its own peak RSS is read from ``os.wait4`` (ru_maxrss of that child alone).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .core import Options, Result, Table, Target, fmt
from .stats import median
from .workers import REPO

TARGET_SECONDS = 5.0
TARGET_RSS_MB = 100.0
SIZES_FULL = (100_000, 1_000_000)
SIZES_QUICK = (10_000, 50_000)


def events_names() -> tuple[str, ...]:
    from lockwatch import events

    return events.NAMES


def _pool(db: str) -> list[dict[str, Any]]:
    from lockwatch import events

    root = "shop/views.py"
    selects = [
        f'SELECT "shop_item"."id", "shop_item"."name", "shop_item"."qty" FROM "shop_item"'
        f' WHERE "shop_item"."id" = %s LIMIT {n}'
        for n in (1, 21)
    ]
    writes = ['INSERT INTO "shop_item" ("name", "qty") VALUES (%s, %s) RETURNING "id"',
              'UPDATE "shop_item" SET "qty" = %s WHERE "shop_item"."id" = %s']  # fmt: skip
    common = dict(pid=4242, thread="Thread-3 (process_request_thread)", thread_id=1401,
                  db=db, alias="default", conn_id=3, capture_mode="exact",
                  context="request:POST /orders/", request_id="9f2c0a1b3d4e5f60",
                  method="POST", path="/orders/", view="orders/ (shop:order_create)")  # fmt: skip
    rows: list[dict[str, Any]] = []
    for i in range(40):
        site = f"{root}:{40 + i % 7} in order_create"
        sql = (selects + writes)[i % 4]
        rows.append(events.row(kind="query", ts=0.0, duration_ms=0.052, sql=sql,
                               fingerprint=sql.replace("LIMIT 21", "LIMIT ?"),
                               stmt_class="read" if i % 4 < 2 else "write",
                               hold_ms=0.06 if i % 4 >= 2 else None, call_site=site,
                               **common))  # fmt: skip
        if i % 4 == 0:
            rows.append(events.row(kind="transaction", ts=0.0, duration_ms=3.2, hold_ms=2.9,
                                   begin_mode="deferred", end="commit", call_site=site,
                                   lock_ts=0.0, lock_sql=writes[0], lock_call_site=site,
                                   statements=4, **common))  # fmt: skip
        if i % 8 == 0:
            rows.append(events.row(kind="wait", ts=0.0, duration_ms=41.5, wait_ms=41.5,
                                   outcome="acquired", sql=writes[1], fingerprint=writes[1],
                                   stmt_class="write", call_site=site, blocker_pid=4243,
                                   blocker_call_site="shop/tasks.py:88 in nightly_rollup",
                                   blocker_context="command:rollup", blocker_thread="MainThread",
                                   blocker_held_ms=812.0, blockers=1, **common))  # fmt: skip
        if i % 20 == 0:
            rows.append(events.row(kind="busy", ts=0.0, classification="timeout",
                                   duration_ms=5001.2, wait_ms=5000.9, error_code=5,
                                   error_name="SQLITE_BUSY", message="database is locked",
                                   sql=writes[0], fingerprint=writes[0], stmt_class="write",
                                   call_site=site, blocker_pid=4243,
                                   blocker_call_site="shop/tasks.py:88 in nightly_rollup",
                                   blocker_context="command:rollup", **common))  # fmt: skip
        if i % 10 == 0:
            rows.append(
                events.row(
                    kind="request",
                    ts=0.0,
                    duration_ms=12.5,
                    status=200,
                    queries=9,
                    db_ms=1.4,
                    wait_ms=0.0,
                    busy_count=0,
                    **common,
                )
            )
    return rows


def fill(path: Path, upto: int, db: str) -> int:
    """Add rows until the store holds `upto` events; returns how many it holds."""
    from lockwatch import events, store

    conn = store.connect(path)
    have = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    names = [n for n in events.NAMES if n != "id"]
    ts_i = names.index("ts")
    lock_i = names.index("lock_ts")
    pool = [[r[n] for n in names] for r in _pool(db)]
    sql = "INSERT INTO events ({}) VALUES ({})".format(
        ", ".join(f'"{n}"' for n in names), ", ".join("?" * len(names))
    )
    start = time.time() - 86_400.0  # a day of history, ending now

    def gen() -> Any:
        for i in range(have, upto):
            values = list(pool[i % len(pool)])
            values[ts_i] = start + i * 0.01
            if values[lock_i] is not None:
                values[lock_i] = values[ts_i] + 0.0001
            yield values

    conn.execute("BEGIN")
    conn.executemany(sql, gen())
    conn.execute("COMMIT")
    n = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    return int(n)


def export_once(path: Path) -> dict[str, float]:
    """Time `python -m lockwatch export` and read that child's own peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lockwatch", "export", "--store", str(path), "-o", os.devnull],
        cwd=REPO, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"export failed ({proc.returncode}): {err[-1000:]}")
    return {"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024.0}  # ru_maxrss is KiB


def _profile(path: Path, limit: int) -> dict[str, Any]:
    import lockwatch
    from lockwatch import store
    from lockwatch.store import export

    from .profiling import package_dir, profile, summary

    conn = store.connect(path, readonly=True)

    def consume() -> None:
        for n, _ in enumerate(export.lines(conn)):
            if n >= limit:
                break

    session = profile(consume, interval=0.0005)
    conn.close()
    return summary(session, (package_dir(lockwatch),), (), limit, top=8)


def floors(path: Path, limit: int) -> dict[str, float]:
    """µs/row of the parts no CSV exporter in Python can skip: fetching every column
    through sqlite3, and csv.writer formatting the raw values (no escaping at all)."""
    import csv
    import io
    import sqlite3

    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    sql = "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT 2000"
    out: dict[str, float] = {}
    for label, write in (("fetch", False), ("fetch + csv.writerows", True)):
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        last, n = 0, 0
        t0 = time.perf_counter()
        while n < limit:
            rows = conn.execute(sql, (last,)).fetchall()
            if not rows:
                break
            last, n = rows[-1][0], n + len(rows)
            if write:
                buf.seek(0)
                buf.truncate()
                writer.writerows(rows)
        out[label] = (time.perf_counter() - t0) / max(n, 1) * 1e6
    conn.close()
    return out


def run(opts: Options) -> Result:
    sizes = SIZES_QUICK if opts.quick else SIZES_FULL
    reps = 1 if opts.quick else 3
    path = opts.workdir / "store.sqlite3"
    db = str(opts.workdir / "app.sqlite3")
    measured: dict[int, dict[str, Any]] = {}
    fill(path, 0, db)
    base = [export_once(path) for _ in range(reps)]
    measured[0] = {"runs": base}
    fill_seconds: dict[int, float] = {}
    for size in sizes:
        t0 = time.perf_counter()
        fill(path, size, db)
        fill_seconds[size] = time.perf_counter() - t0
        measured[size] = {"runs": [export_once(path) for _ in range(reps)]}
    for m in measured.values():
        m["seconds"] = median([r["seconds"] for r in m["runs"]])
        m["rss_mb"] = median([r["rss_mb"] for r in m["runs"]])
    big = sizes[-1]
    res = Result()
    res.method = [
        "Store filled by bulk insert of rows built with `lockwatch.events.row` (a pool of"
        f" query, transaction, wait, busy and request rows, {len(events_names())} columns,"
        " realistic SQL and"
        " call sites), new timestamps per row, into a store from `lockwatch.store.connect`.",
        f"`python -m lockwatch export --store STORE -o /dev/null` timed in a subprocess;"
        f" peak RSS = that child's ru_maxrss from `os.wait4`. Median of {reps} runs.",
    ]
    rows = [
        [fmt(size, 0), f"{m['seconds']:.2f}", f"{m['rss_mb']:.1f}",
         f"{m['seconds'] / size * 1e6:.1f}" if size else "",
         f"{fill_seconds[size]:.1f}" if size in fill_seconds else ""]
        for size, m in measured.items()
    ]  # fmt: skip
    res.tables.append(Table(["events", "export s", "peak RSS MB", "µs/event", "fill s"], rows))
    secs, rss = measured[big]["seconds"], measured[big]["rss_mb"]
    growth = rss - measured[sizes[0]]["rss_mb"]
    scaled_secs = secs * (1_000_000 / big)
    res.targets += [
        Target("1M events exported in ≤ 5 s" + ("" if big == 1_000_000 else " (extrapolated)"),
               f"{scaled_secs:.1f} s", scaled_secs <= TARGET_SECONDS),
        Target("peak RSS ≤ 100 MB", f"{rss:.1f} MB", rss <= TARGET_RSS_MB),
        Target(f"RSS flat from {sizes[0]:,} to {big:,} events (within 5 MB)",
               f"{growth:+.1f} MB", abs(growth) <= 5.0),
    ]  # fmt: skip
    prof, fl = None, None
    if opts.profile and not all(t.met for t in res.targets):
        from . import profiling

        n = min(big, 20_000 if opts.quick else 200_000)
        prof = _profile(path, n)
        per = secs / big * 1e6
        res.notes += profiling.render(
            prof, f"pyinstrument, `export.lines` ({per:.1f} µs/event)", per
        )
        fl = floors(path, n)
        both = fl["fetch + csv.writerows"]
        res.notes.append(
            f"What bounds it, per row of {len(events_names())} columns on this machine:"
            f" fetching every column through sqlite3 costs {fl['fetch']:.1f} µs, and"
            f" csv.writer on the raw values {both - fl['fetch']:.1f} µs more: {both:.1f} s per"
            " million rows before any escaping or timestamp formatting."
        )
    res.summary = f"{big:,} events in {secs:.2f} s, peak RSS {rss:.1f} MB (growth {growth:+.1f} MB)"
    res.data = {
        "sizes": measured, "fill_seconds": fill_seconds, "profile": prof, "floors_us_per_row": fl,
    }  # fmt: skip
    return res
