"""Before and after: what the clients saw (load.py's JSON) and what lockwatch recorded.

Reads lockwatch's store with the plain sqlite3 module, read-only, one time window per
phase. Busy errors are counted by class; lock wait is the sum of the wait events (a
busy event repeats the wait that preceded it, so it is not added again).

    python demo/report.py --store .demo/lockwatch.sqlite3 \\
        --phase "Django defaults" .demo/phase1.json T0 T1 \\
        --phase "doctor's advice" .demo/phase2.json T0 T1
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLASSES = ("upgrade", "timeout", "snapshot", "locked", "other")
HIDDEN = "request:POST /visit/"  # the write that never fails, and waits


@dataclass
class Phase:
    label: str
    load: dict[str, Any]
    since: float
    until: float
    busy: dict[str, int] = field(default_factory=dict)
    wait_ms: float = 0.0
    waits: int = 0
    longest_ms: float = 0.0
    longest_at: str = ""
    hidden_ms: float = 0.0
    hidden_waits: int = 0
    worst_hold_ms: float = 0.0
    worst_hold_at: str = ""


def read_store(conn: sqlite3.Connection, p: Phase) -> None:
    window = (p.since, p.until)
    for cls, n in conn.execute(
        "SELECT classification, count(*) FROM events"
        " WHERE kind = 'busy' AND ts BETWEEN ? AND ? GROUP BY classification",
        window,
    ):
        p.busy[cls or "other"] = n
    row = conn.execute(
        "SELECT count(*), COALESCE(sum(wait_ms), 0) FROM events"
        " WHERE kind = 'wait' AND ts BETWEEN ? AND ?",
        window,
    ).fetchone()
    p.waits, p.wait_ms = row
    row = conn.execute(
        "SELECT wait_ms, context FROM events WHERE kind = 'wait' AND ts BETWEEN ? AND ?"
        " ORDER BY wait_ms DESC LIMIT 1",
        window,
    ).fetchone()
    if row:
        p.longest_ms, p.longest_at = row[0], row[1] or ""
    row = conn.execute(
        "SELECT count(*), COALESCE(sum(wait_ms), 0) FROM events"
        " WHERE kind = 'wait' AND context = ? AND ts BETWEEN ? AND ?",
        (HIDDEN, *window),
    ).fetchone()
    p.hidden_waits, p.hidden_ms = row
    row = conn.execute(
        "SELECT hold_ms, COALESCE(lock_call_site, call_site) FROM events"
        " WHERE kind IN ('transaction', 'query') AND hold_ms IS NOT NULL AND ts BETWEEN ? AND ?"
        " ORDER BY hold_ms DESC LIMIT 1",
        window,
    ).fetchone()
    if row:
        p.worst_hold_ms, p.worst_hold_at = row[0], row[1] or ""


def short(where: str) -> str:
    """A context without "request:", a call site without its folders: narrower columns."""
    if ".py:" in where:
        return where.rsplit("/", 1)[-1]
    return where.removeprefix("request:")


def waits(ms: float, n: int) -> str:
    return f"{seconds(ms)} in {n} wait{'s' if n != 1 else ''}"


def seconds(ms: float) -> str:
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


def rows(phases: Sequence[Phase]) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []

    def add(name: str, cells: list[str]) -> None:
        out.append((name, cells))

    totals = []
    for p in phases:
        eps = p.load["endpoints"]
        requests = sum(e["requests"] for e in eps.values())
        locked = sum(e["locked"] for e in eps.values())
        totals.append((requests, locked, eps))
    add("requests", [str(r) for r, _, _ in totals])
    add("failed with 503 (locked)", [f"{n} ({pct(n, r)})" for r, n, _ in totals])
    for name in phases[0].load["endpoints"]:
        cells = []
        for _, _, eps in totals:
            e = eps.get(name, {"requests": 0, "locked": 0})
            cells.append(f"{e['locked']}/{e['requests']} ({pct(e['locked'], e['requests'])})")
        add(f"  {name}", cells)
    add("busy errors in the store", [str(sum(p.busy.values())) for p in phases])
    for cls in CLASSES:
        if any(p.busy.get(cls) for p in phases):
            add(f"  {cls}", [str(p.busy.get(cls, 0)) for p in phases])
    add("total lock wait", [waits(p.wait_ms, p.waits) for p in phases])
    add(
        "  of it on /visit/ (no errors)",
        [waits(p.hidden_ms, p.hidden_waits) for p in phases],
    )
    add("longest wait", [f"{seconds(p.longest_ms)} {short(p.longest_at)}".strip() for p in phases])
    add("longest write-lock hold", [seconds(p.worst_hold_ms) for p in phases])
    add("  taken at", [short(p.worst_hold_at) or "-" for p in phases])
    return out


def pct(n: int, d: int) -> str:
    return f"{100 * n / d:.1f}%" if d else "-"


def render(phases: Sequence[Phase]) -> str:
    table = rows(phases)
    first = max(len(name) for name, _ in table) + 2
    widths = [
        max(len(p.label), *(len(cells[i]) for _, cells in table)) + 2 for i, p in enumerate(phases)
    ]

    def line(name: str, cells: Sequence[str]) -> str:
        return name.ljust(first) + "".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))

    lines = [line("", [p.label for p in phases])]
    lines += [line(name, cells) for name, cells in table]
    return "\n".join(line.rstrip() for line in lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument(
        "--phase",
        nargs=4,
        action="append",
        required=True,
        metavar=("LABEL", "LOAD_JSON", "SINCE", "UNTIL"),
        help="a phase's label, load.py's JSON, and its time window (epoch seconds)",
    )
    args = parser.parse_args(argv)
    phases = [
        Phase(label, json.loads(Path(path).read_text()), float(since), float(until))
        for label, path, since, until in args.phase
    ]
    conn = sqlite3.connect(f"{Path(args.store).resolve().as_uri()}?mode=ro", uri=True)
    try:
        for p in phases:
            read_store(conn, p)
    finally:
        conn.close()
    print(render(phases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
