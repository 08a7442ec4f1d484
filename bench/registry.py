"""Every benchmark of issue 6, by number and name; stubs say what they wait for."""

from __future__ import annotations

from . import dashboard, export, handoff, live, load, mixed, overhead, pipeline, scale, waitcost
from .core import Benchmark

BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(1, "overhead", "Per-query overhead", overhead.run),
    Benchmark(2, "load", "Under load (gunicorn)", load.run),
    Benchmark(3, "pipeline", "Pipeline throughput and drops", pipeline.run),
    Benchmark(4, "live", "Live latency (capture → dashboard)", live.run),
    Benchmark(5, "export", "CSV export of 1M events", export.run),
    Benchmark(6, "dashboard", "Dashboard query times", dashboard.run),
    Benchmark(7, "handoff", "Lock hand-off: busy handler vs SQLite's default", handoff.run),
    Benchmark(8, "scale", "Added CPU per request as gunicorn workers grow", scale.run),
    Benchmark(9, "mixed", "Mixed loop (selects and creates) in fresh processes", mixed.run),
    Benchmark(10, "waitcost", "What a wait costs the waiter's CPU", waitcost.run),
)


def select(names: list[str]) -> list[Benchmark]:
    """By name or number; all when none given."""
    if not names:
        return list(BENCHMARKS)
    by_key = {b.name: b for b in BENCHMARKS} | {str(b.number): b for b in BENCHMARKS}
    unknown = [n for n in names if n not in by_key]
    if unknown:
        known = ", ".join(f"{b.number}/{b.name}" for b in BENCHMARKS)
        raise SystemExit(f"unknown benchmark {', '.join(unknown)}; choose from {known}")
    chosen = {by_key[n].number for n in names}
    return [b for b in BENCHMARKS if b.number in chosen]
