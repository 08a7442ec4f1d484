"""bench/results/latest.md and latest.json."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .core import Benchmark, Result


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _met(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "n/a"}[met]


def markdown(
    machine: dict[str, Any], mode: str, runs: list[tuple[Benchmark, Result]], command: str
) -> str:
    commit = f", lockwatch at commit {machine['commit']}" if machine.get("commit") else ""
    lines = [
        "# lockwatch benchmarks",
        "",
        f"Run {machine['date']} ({mode}) with `{command}`{commit}.",
        "",
        f"Machine: {machine['nproc']} cores, {machine['cpu']}, {machine['platform']};"
        f" Python {machine['python']}, Django {machine['django']}, SQLite {machine['sqlite']},"
        f" django-debug-toolbar {machine['django-debug-toolbar']}, django-silk"
        f" {machine['django-silk']}; load average at start {machine['loadavg']}.",
        "",
        "## Summary",
        "",
    ]
    summary_rows = []
    for b, r in runs:
        targets = "; ".join(f"{t.text}: {t.value} ({_met(t.met)})" for t in r.targets)
        summary_rows.append([b.number, b.name, r.status, r.summary or "", targets])
    lines += _table(["#", "benchmark", "status", "result", "targets"], summary_rows)
    for b, r in runs:
        lines += ["", f"## {b.number}. {b.title} (`{b.name}`)", ""]
        if r.status != "ok":
            lines += [f"**{r.status}**" + (f": {r.summary}" if r.summary else ""), ""]
            if r.status == "not yet implemented":
                continue
        if r.method:
            lines += ["Method:", ""] + [f"- {m}" for m in r.method] + [""]
        for t in r.tables:
            if t.title:
                lines += [f"**{t.title}**", ""]
            lines += _table(t.columns, t.rows) + [""]
        if r.targets:
            lines += _table(
                ["target", "measured", ""], [[t.text, t.value, _met(t.met)] for t in r.targets]
            ) + [""]  # fmt: skip
        if r.notes:
            lines += r.notes + [""]
        lines += [f"_{r.seconds:.0f} s_"]
    return "\n".join(lines).rstrip() + "\n"


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def write(
    outdir: Path, stem: str, machine: dict[str, Any], mode: str,
    runs: list[tuple[Benchmark, Result]], command: str,
) -> tuple[Path, Path]:  # fmt: skip
    outdir.mkdir(parents=True, exist_ok=True)
    md, js = outdir / f"{stem}.md", outdir / f"{stem}.json"
    doc = {
        "machine": machine,
        "mode": mode,
        "command": command,
        "benchmarks": [
            {"number": b.number, "name": b.name, "title": b.title, **r.to_json()} for b, r in runs
        ],
    }
    # Write then rename, so a reader never sees half a file.
    for path, text in ((md, markdown(machine, mode, runs, command)),
                       (js, json.dumps(_json_safe(doc), indent=1) + "\n")):  # fmt: skip
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return md, js
