"""1. Per-query overhead: plain Django vs lockwatch vs django-debug-toolbar vs django-silk.

Each alternative lives in its own worker process with its own settings module and its
own SQLite file (WAL, synchronous=NORMAL). The driver asks the workers in turn for one
round of K operations, rotating who goes first, and quotes medians over rounds. Ratios
are paired: alternative / plain within the same round.
"""

from __future__ import annotations

from typing import Any

from . import profiling
from .core import Options, Result, Table, Target, fmt, ratio
from .stats import median, paired_ratios, quartiles, rotate
from .workers import Worker

# alternative -> (settings module, what the report calls it)
ALTERNATIVES: dict[str, tuple[str, str]] = {
    "plain": ("plain", "plain django.db.backends.sqlite3"),
    "lockwatch": ("lockwatch", "lockwatch, defaults (everything on)"),
    "lockwatch_params": ("lockwatch_params", "lockwatch + CAPTURE_PARAMS"),
    "lockwatch_all": ("lockwatch_all", "lockwatch + CAPTURE_QUERIES='all'"),
    "toolbar": ("toolbar", "django-debug-toolbar SQL panel"),
    "silk": ("silk", "django-silk SQL recording"),
    # Diagnosis: capture alone, no flusher; and without call sites (nobody would run these).
    "lockwatch_inline": ("lockwatch", "(lockwatch capture path only, flusher off)"),
    "lockwatch_nosite": ("lockwatch", "(capture path only, call sites not looked up)"),
}

# op -> (statements per op, description)
OPS: dict[str, tuple[int, str]] = {
    "select": (1, "ORM point select `Item.objects.get(pk=…)`"),
    "insert": (1, "single-row insert `Item.objects.create(…)` (autocommit)"),
    "atomic": (5, "`atomic()` with 1 insert + 2 updates (BEGIN, 3 writes, COMMIT)"),
}

# Short rounds, many of them: other load on a shared machine comes in bursts, and a
# paired ratio over two adjacent ~40 ms rounds rarely straddles one.
FULL = {"rounds": 61, "n": {"select": 300, "insert": 200, "atomic": 60}}
QUICK = {"rounds": 3, "n": {"select": 150, "insert": 80, "atomic": 30}}

MAX_RATIO = 1.02
LINES = ("plain", "lockwatch")  # the alternatives whose executed lines are counted
MIN_TOOLBAR_FACTOR = 50.0


def run(opts: Options) -> Result:
    plan = QUICK if opts.quick else FULL
    names = list(ALTERNATIVES)
    workers = {name: Worker(name, ALTERNATIVES[name][0], opts.workdir) for name in names}
    try:
        info = {name: w.ask(cmd="setup") for name, w in workers.items()}
        samples: dict[str, dict[str, dict[str, list[float]]]] = {
            op: {name: {"wall_us": [], "cpu_us": []} for name in names} for op in OPS
        }
        for op in OPS:
            n = plan["n"][op]
            for name in names:  # warm-up: caches, statement cache, the flusher thread
                workers[name].ask(cmd="round", op=op, n=n)
            for r in range(plan["rounds"]):
                for name in rotate(names, r):
                    reply = workers[name].ask(cmd="round", op=op, n=n)
                    for key in ("wall_us", "cpu_us"):
                        samples[op][name][key].append(reply[key])
        figures = _figures(samples)
        lines = {op: {name: workers[name].ask(cmd="lines", op=op) for name in LINES} for op in OPS}
        profiles: dict[tuple[str, str], Any] = {}
        if opts.profile:
            # lockwatch on every op (its misses differ by op), the toolbar for scale.
            for name, op in [("lockwatch", op) for op in OPS] + [("toolbar", "select")]:
                n = plan["n"][op] * (2 if opts.quick else 6)
                profiles[name, op] = workers[name].ask(cmd="profile", op=op, n=n)
    finally:
        for w in workers.values():
            w.close()
    return _result(plan, figures, profiles, info, lines)


def _figures(samples: dict[str, dict[str, dict[str, list[float]]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for op, by_alt in samples.items():
        out[op] = {}
        for name, s in by_alt.items():
            f: dict[str, Any] = {"samples": s}
            for key in ("wall", "cpu"):
                mine, base = s[f"{key}_us"], by_alt["plain"][f"{key}_us"]
                r = paired_ratios(mine, base)
                f[f"{key}_us"] = median(mine)
                f[f"{key}_ratio"] = median(r)
                f[f"{key}_iqr"] = quartiles(r)
                f[f"{key}_added"] = median([a - b for a, b in zip(mine, base, strict=True)])
            out[op][name] = f
    return out


def _cells(f: dict[str, Any], key: str, base: bool) -> list[str]:
    if base:
        return [fmt(f[f"{key}_us"]), "1", ""]
    q1, q3 = f[f"{key}_iqr"]
    return [
        fmt(f[f"{key}_us"]),
        f"{ratio(f[f'{key}_ratio'])} [{q1:.2f}–{q3:.2f}]",
        f"{f[f'{key}_added']:+.1f}",
    ]


def _result(
    plan: dict[str, Any], figures: dict[str, Any], profiles: dict[str, Any], info: dict,
    lines: dict[str, dict[str, dict[str, int]]],
) -> Result:  # fmt: skip
    res = Result()
    res.method = [
        "Each alternative runs in its own worker process (own settings module under"
        " `bench/site/settings/`, own SQLite file, WAL + synchronous=NORMAL, timeout 5 s).",
        f"{plan['rounds']} interleaved rounds per operation (rotating which alternative goes"
        f" first) after one warm-up round; K = {plan['n']} operations per round.",
        "A round runs inside one real request through Django's WSGIHandler and a typical"
        " middleware stack (lockwatch's settings add LockwatchMiddleware, which binds the"
        " request Context); the toolbar's SQL panel is enabled per round the way the toolbar"
        " does per request; silk's SQLCompiler patch and DataCollector are set up as its"
        " middleware does (saving its models at the end of the request is left out).",
        "wall µs/op = wall time of the K operations / K. CPU µs/op = process CPU time of all"
        " threads over the round and the `lockwatch.flush()` after it, / K: it includes the"
        " work of lockwatch's flusher thread, which the wall figure only partly sees (the"
        " flusher wakes every 0.1 s and may run after a short round). The targets are judged"
        " on CPU, the full cost. Figures are medians over rounds; ratios are medians of the"
        " per-round paired ratio alternative/plain [interquartile range]; added = median"
        " per-round difference.",
    ]
    rows = []
    for op in OPS:
        for name, f in figures[op].items():
            base = name == "plain"
            rows.append(
                [op if base else "", ALTERNATIVES[name][1]]
                + _cells(f, "wall", base)
                + _cells(f, "cpu", base)
            )
    res.tables.append(
        Table(
            [
                "op",
                "alternative",
                "wall µs/op",
                "wall ratio",
                "wall added µs",
                "CPU µs/op",
                "CPU ratio",
                "CPU added µs",
            ],
            rows,
        )  # fmt: skip
    )
    res.notes.append(
        "Operations: " + "; ".join(f"**{op}**: {desc}" for op, (_, desc) in OPS.items()) + "."
    )
    res.notes.append(
        "django-silk patches `SQLCompiler.execute_sql`, which `SQLInsertCompiler` overrides:"
        " silk does not record plain inserts at all, so its insert row is ~plain. For the"
        " queries it records it runs an extra `EXPLAIN` on the same connection."
    )
    worst = 0.0
    for op in OPS:
        lw, tb = figures[op]["lockwatch"], figures[op]["toolbar"]
        worst = max(worst, lw["cpu_ratio"])
        res.targets.append(
            Target(
                f"lockwatch ≤ {MAX_RATIO}× plain ({op})",
                f"{ratio(lw['cpu_ratio'])} CPU, {ratio(lw['wall_ratio'])} wall",
                lw["cpu_ratio"] <= MAX_RATIO,
            )
        )
        added = lw["cpu_added"]
        if added <= 0:
            factor_text, met = f"lockwatch added {added:+.1f} µs (≤ 0)", True
        else:
            factor = tb["cpu_added"] / added
            factor_text = (
                f"toolbar +{tb['cpu_added']:.1f} µs / lockwatch +{added:.1f} µs = {factor:.1f}×"
            )
            met = factor >= MIN_TOOLBAR_FACTOR
        res.targets.append(
            Target(
                f"lockwatch's added µs ≥ {MIN_TOOLBAR_FACTOR:.0f}× smaller than the"
                f" toolbar's ({op})",
                factor_text,
                met,
            )
        )
    for op in OPS:
        f = figures[op]
        inline = f["lockwatch_inline"]["cpu_added"]
        nosite = f["lockwatch_nosite"]["cpu_added"]
        res.notes.append(
            f"Where lockwatch's {op} cost goes (CPU µs/op over plain): capture path"
            f" {inline:+.1f} (flusher off), of which finding call sites"
            f" {inline - nosite:+.1f} (capture path minus its run without them), the"
            " flusher thread"
            f" {f['lockwatch']['cpu_added'] - inline:+.1f} (everything on minus that);"
            " recording every statement (CAPTURE_QUERIES='all')"
            f" {f['lockwatch_all']['cpu_added']:+.1f} in all."
        )
    res.tables.append(_lines_table(figures, lines))
    res.notes.append(
        "Python lines per operation: `sys.settrace` over one warm operation in each worker"
        " (bench.worker.lines_of_op), by the file's package. Machine-independent: what the"
        " code executes. CPU added per added line = the CPU added µs above / the lines added:"
        " the cost of a line of Python on this machine, in an application's cold caches."
    )
    for (name, op), prof in profiles.items():
        us = figures[op][name]["wall_us"]
        label = f"pyinstrument, {ALTERNATIVES[name][1]}, {op} (µs scaled to the unprofiled run)"
        res.notes += profiling.render(prof, label, us)
    sel = figures["select"]
    res.summary = (
        f"point select: lockwatch {ratio(sel['lockwatch']['cpu_ratio'])} plain (CPU, incl."
        f" flusher), worst op {ratio(worst)}; toolbar {ratio(sel['toolbar']['cpu_ratio'])},"
        f" silk {ratio(sel['silk']['cpu_ratio'])}"
    )
    res.data = {
        "plan": plan, "figures": figures, "workers": info,
        "profiles": {f"{name}/{op}": prof for (name, op), prof in profiles.items()},
        "lines": lines,
    }  # fmt: skip
    return res


def _lines_table(figures: dict[str, Any], lines: dict[str, dict[str, dict[str, int]]]) -> Table:
    rows = []
    for op in OPS:
        plain, lw = lines[op]["plain"], lines[op]["lockwatch"]
        added = sum(lw.values()) - sum(plain.values())
        cpu = figures[op]["lockwatch"]["cpu_added"]
        rows.append([
            op, f"{sum(plain.values()):,}", f"{sum(lw.values()):,}", f"{lw.get('lockwatch', 0):,}",
            f"{added:+,}", f"{cpu * 1000 / added:.0f}" if added > 0 else "",
        ])  # fmt: skip
    return Table(
        ["op", "plain lines", "lockwatch lines", "of which lockwatch's", "added",
         "CPU ns added per added line"],
        rows, "Python lines per operation",
    )  # fmt: skip
