"""``python -m bench [--quick] [NAME ...]``: run benchmarks, write bench/results/latest.*

Only a full run of every benchmark writes latest.*; a --quick run writes quick.* and a
full run of some benchmarks partial.*, so neither replaces the last complete figures.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from . import machine, registry, report
from .core import Benchmark, Options, Result

RESULTS = Path(__file__).resolve().parent / "results"


def run_one(b: Benchmark, quick: bool, profile: bool) -> Result:
    if b.run is None:
        return Result(status="not yet implemented", summary=f"{b.waits_for}; no figures yet")
    workdir = Path(tempfile.mkdtemp(prefix=f"lockwatch-bench-{b.name}-"))
    t0 = time.monotonic()
    try:
        result = b.run(Options(quick=quick, workdir=workdir, profile=profile))
    except Exception as exc:
        traceback.print_exc()
        result = Result(status="failed", summary=f"{type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result.seconds = time.monotonic() - t0
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmarks by name or number (default: all)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds each")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip the pyinstrument profiles")  # fmt: skip
    parser.add_argument("-o", "--outdir", type=Path, default=RESULTS,
                        help="where the .md and .json go (default bench/results)")  # fmt: skip
    args = parser.parse_args(argv)
    chosen = registry.select(args.names)
    mode = "quick" if args.quick else "full"
    info = machine.describe()
    runs: list[tuple[Benchmark, Result]] = []
    for b in chosen:
        print(f"[bench] {b.number}. {b.name} ...", file=sys.stderr, flush=True)
        result = run_one(b, args.quick, args.profile)
        print(f"[bench] {b.name}: {result.status} {result.summary} ({result.seconds:.0f} s)",
              file=sys.stderr, flush=True)  # fmt: skip
        runs.append((b, result))
    stem = "quick" if args.quick else ("latest" if not args.names else "partial")
    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    md, js = report.write(args.outdir, stem, info, mode, runs, command)
    print(md.read_text(encoding="utf-8"))
    print(f"[bench] wrote {md} and {js}", file=sys.stderr)
    return 1 if any(r.status == "failed" for _, r in runs) else 0
