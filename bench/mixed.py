"""9. A mixed loop in fresh processes: point selects and creates, plain vs lockwatch.

Each round starts a fresh process per alternative (their caches, statement cache and
flusher start cold, as a new worker's would), creates the table, then runs 3,000 point
selects and 500 ``create()`` calls interleaved (six selects, one create) inside one
request, and reports the process CPU time of the loop (all threads: lockwatch's flusher
included, after a final flush). Alternatives take turns, the first one rotating; the
figure is the median of the per-round ratio lockwatch / plain.
"""

from __future__ import annotations

from typing import Any

from .core import Options, Result, Table, Target, fmt, ratio
from .stats import median, paired_ratios, quartiles, rotate
from .workers import Worker

ALTERNATIVES = {"plain": "plain", "lockwatch": "lockwatch"}
FULL = {"rounds": 15, "selects": 3000, "creates": 500}
QUICK = {"rounds": 3, "selects": 600, "creates": 100}
TARGET = 1.04  # issue 18's target for this loop


def run(opts: Options) -> Result:
    plan = QUICK if opts.quick else FULL
    cpu: dict[str, list[float]] = {name: [] for name in ALTERNATIVES}
    wall: dict[str, list[float]] = {name: [] for name in ALTERNATIVES}
    for r in range(plan["rounds"]):
        for name in rotate(list(ALTERNATIVES), r):
            workdir = opts.workdir / f"{name}-{r}"
            workdir.mkdir()
            worker = Worker(name, ALTERNATIVES[name], workdir)
            try:
                worker.ask(cmd="setup")
                reply = worker.ask(cmd="mixed", selects=plan["selects"], creates=plan["creates"])
            finally:
                worker.close()
            cpu[name].append(reply["cpu_s"])
            wall[name].append(reply["wall_s"])
    ratios = paired_ratios(cpu["lockwatch"], cpu["plain"])
    lo, hi = quartiles(ratios)
    got = median(ratios)
    ops = plan["selects"] + plan["creates"]
    rows: list[list[Any]] = [
        [name, fmt(median(cpu[name]) * 1e3), fmt(median(wall[name]) * 1e3),
         fmt(median(cpu[name]) * 1e6 / ops)]
        for name in ALTERNATIVES
    ]  # fmt: skip
    return Result(
        summary=f"mixed loop: lockwatch {ratio(got)} plain CPU [{ratio(lo)}–{ratio(hi)}]",
        method=[
            f"{plan['rounds']} rounds; each round a fresh process per alternative, turns rotating",
            f"{plan['selects']} point selects and {plan['creates']} creates, six selects to one"
            " create, in one request; CPU of all the process's threads, flusher included",
            "ratio: median of the per-round lockwatch / plain CPU, with its interquartile range",
        ],
        tables=[
            Table(["alternative", "CPU ms", "wall ms", "CPU µs/op"], rows, "per round, medians")
        ],
        targets=[Target(f"lockwatch ≤ {TARGET}× plain (mixed loop)", ratio(got), got <= TARGET)],
        data={"cpu_s": cpu, "wall_s": wall, "ratios": ratios},
    )
