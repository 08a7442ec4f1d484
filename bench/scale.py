"""8. Scale: lockwatch's added worker CPU per request as gunicorn workers grow.

The demo shop (``/checkout/`` read-then-write and ``/visit/`` plain writes, Django's
defaults, so real ``upgrade`` errors and waits) under ``gunicorn -w N`` for N from 2 to
16, two clients per worker, plain and lockwatch in alternating runs (the first
alternative rotating each round). The workers' CPU per request comes from /proc: on an
oversubscribed machine requests/s says little, CPU per request still measures the cost.

Each lockwatch run also reads its store: the share of waits and busy errors whose
blocker is not an instrumented holder (``outside`` or blank). No other program touches
the file, so the truth is 0; ``readers`` (a COMMIT waiting for read transactions with
the lock held) is a real answer and is counted apart.

Target (issue 12): flat, the added CPU per request at 16 workers within 10% of that at 2.
``python -m bench.scale --workers 16,32`` runs other counts (the 16-core machine).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

from .core import Options, Result, Table, Target, fmt
from .load import ALTERNATIVES, migrated, trial
from .stats import median, rotate

WORKER_COUNTS = (2, 4, 8, 16)
CLIENTS_PER_WORKER = 2
TARGET = 1.10  # added CPU per request at the most workers ÷ at the fewest


def blockers(store: Path) -> dict[str, Any]:
    """How the lockwatch run's waits and busy errors named their blockers."""
    conn = sqlite3.connect(f"{store.as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT blocker_context, count(*) FROM events WHERE kind IN ('wait', 'busy')"
            " GROUP BY blocker_context"
        ).fetchall()
    finally:
        conn.close()
    counts = {k: n for k, n in rows}
    total = sum(counts.values())
    unnamed = sum(n for k, n in counts.items() if k in (None, "outside", "unknown"))
    return {"waits": total, "unnamed": unnamed, "readers": counts.get("readers", 0)}


def measure(
    workdir: Path, counts: tuple[int, ...], rounds: int, seconds: float
) -> dict[int, dict[str, list[dict[str, Any]]]]:
    template = migrated(workdir)
    names = list(ALTERNATIVES)
    runs: dict[int, dict[str, list[dict[str, Any]]]] = {n: {a: [] for a in names} for n in counts}
    for r in range(rounds):
        for w in counts:
            for i, name in enumerate(rotate(names, r)):
                print(f"[bench] scale: round {r + 1}/{rounds}, -w {w}, {name}", file=sys.stderr)
                runs[w][name].append(
                    trial(
                        name, f"w{w}-r{r}-{i}", workdir, template, CLIENTS_PER_WORKER * w,
                        seconds, workers=w, inspect=blockers,
                    )
                )  # fmt: skip
    return runs


def table(runs: dict[int, dict[str, list[dict[str, Any]]]]) -> tuple[Table, dict[int, float]]:
    rows = []
    added: dict[int, float] = {}
    for w, by in runs.items():
        plain = [t["cpu_ms"] for t in by["plain"]]
        lw = [t["cpu_ms"] for t in by["lockwatch"]]
        # Paired by round: each round ran both alternatives back to back.
        added[w] = median([b - a for a, b in zip(plain, lw, strict=True)])
        waits = sum(t["waits"] for t in by["lockwatch"])
        unnamed = sum(t["unnamed"] for t in by["lockwatch"])
        readers = sum(t["readers"] for t in by["lockwatch"])
        busy = median([t["locked"] / max(t["requests"], 1) for t in by["lockwatch"]])
        rows.append(
            [
                w, f"{median(plain):.2f}", f"{median(lw):.2f}", f"{added[w]:+.2f}",
                fmt(median([t["rps"] for t in by["plain"]])),
                fmt(median([t["rps"] for t in by["lockwatch"]])),
                f"{busy * 100:.1f}%", waits,
                f"{unnamed} ({unnamed / max(waits, 1) * 100:.1f}%)", readers,
            ]
        )  # fmt: skip
    return (
        Table(
            [
                "workers",
                "plain CPU ms/request",
                "lockwatch CPU ms/request",
                "added (paired median)",
                "plain req/s",
                "lockwatch req/s",
                "503 share",
                "waits + busy errors",
                "no instrumented blocker",
                "readers",
            ],
            rows,
            f"{CLIENTS_PER_WORKER} clients per worker; medians over rounds",
        ),  # fmt: skip
        added,
    )


def run(
    opts: Options,
    counts: tuple[int, ...] = WORKER_COUNTS,
    rounds: int | None = None,
    seconds: float | None = None,
) -> Result:
    rounds = rounds or (1 if opts.quick else 3)
    seconds = seconds or (3.0 if opts.quick else 8.0)
    runs = measure(opts.workdir, counts, rounds, seconds)
    res = Result()
    tab, added = table(runs)
    res.tables.append(tab)
    lo, hi = added[min(counts)], added[max(counts)]
    growth = hi / lo if lo > 0 else float("inf")
    res.targets.append(
        Target(
            f"added CPU per request at {max(counts)} workers ≤ {TARGET:.2f}× that at {min(counts)}",
            f"{hi:+.2f} ms vs {lo:+.2f} ms ({growth:.2f}×)",
            None if opts.quick else growth <= TARGET,
        )
    )
    waits = sum(t["waits"] for by in runs.values() for t in by["lockwatch"])
    unnamed = sum(t["unnamed"] for by in runs.values() for t in by["lockwatch"])
    res.summary = (
        f"added worker CPU per request {lo:+.2f} ms at -w {min(counts)}, {hi:+.2f} ms at "
        f"-w {max(counts)}; {unnamed} of {waits} waits and busy errors without an "
        "instrumented blocker"
    )
    res.method = [
        f"gunicorn -w N for N in {', '.join(map(str, counts))}; {CLIENTS_PER_WORKER} clients "
        f"per worker on /checkout/ + /visit/, {seconds:g} s per run, {rounds} rounds, plain "
        "and lockwatch alternating (first rotating)",
        "workers' CPU from /proc over the timed load, divided by requests; added = the "
        "per-round paired difference, median",
    ]
    res.data = {"runs": {str(w): by for w, by in runs.items()}, "added_ms": added}
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default=",".join(map(str, WORKER_COUNTS)))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    counts = tuple(int(n) for n in args.workers.split(","))
    with tempfile.TemporaryDirectory(prefix="lockwatch-scale-") as tmp:
        opts = Options(quick=args.quick, workdir=Path(tmp), profile=False)
        res = run(opts, counts, args.rounds, args.seconds)
    print(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}; {res.method[0]}")
    tab = res.tables[0]
    print("| " + " | ".join(tab.columns) + " |")
    print("|" + "---|" * len(tab.columns))
    for row in tab.rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    for t in res.targets:
        verdict = {True: "met", False: "missed", None: "n/a"}[t.met]
        print(f"target: {t.text}: {t.value} ({verdict})")
    if args.json:
        import json

        args.json.write_text(json.dumps(res.to_json(), indent=1, default=str))


if __name__ == "__main__":
    main()
