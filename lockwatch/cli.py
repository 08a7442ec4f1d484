"""The ``lockwatch`` command: ``lockwatch export``, and more as they land."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__


def _store_path(value: str | None) -> Path:
    path = value or os.environ.get("LOCKWATCH_STORE") or "lockwatch.sqlite3"
    return Path(path).expanduser().resolve()


def _export(args: argparse.Namespace) -> int:
    from . import export, store
    from .filters import FilterError, parse

    try:
        filters = parse(
            {
                "since": args.since, "until": args.until, "kind": args.kind,
                "classification": args.classification, "call_site": args.call_site,
                "context": args.context, "pid": args.pid,
            }
        )  # fmt: skip
        conn = store.connect(_store_path(args.store), readonly=True)
    except (FilterError, store.StoreError) as exc:
        print(f"lockwatch export: error: {exc}", file=sys.stderr)
        return 2
    progress = None
    if sys.stderr.isatty():
        total = export.count(conn, filters)
        if total > 50_000:

            def progress(n: int) -> None:
                width = 30
                done = int(width * n / total)
                bar = "#" * done + "." * (width - done)
                print(f"\r[{bar}] {n:,}/{total:,} events", end="", file=sys.stderr, flush=True)

    out = sys.stdout
    if args.output:
        out = open(args.output, "w", newline="", encoding="utf-8")  # noqa: SIM115
    try:
        for line in export.lines(conn, filters, progress):
            out.write(line)
    except BrokenPipeError:
        return 0
    finally:
        if out is not sys.stdout:
            out.close()
        if progress is not None:
            print(file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lockwatch", description=__doc__)
    parser.add_argument("--version", action="version", version=f"lockwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    ex = sub.add_parser("export", help="write events as CSV")
    ex.add_argument(
        "--store", help="the store file (default $LOCKWATCH_STORE or ./lockwatch.sqlite3)"
    )
    ex.add_argument("-o", "--output", help="write to this file instead of stdout")
    ex.add_argument("--since", help="ISO-8601 time or an age: 15m, 2h, 1d")
    ex.add_argument("--until", help="ISO-8601 time or an age: 15m, 2h, 1d")
    ex.add_argument("--kind", help="query, transaction, wait, busy or request")
    ex.add_argument("--classification", help="timeout, upgrade, snapshot, locked or other")
    ex.add_argument("--call-site", dest="call_site", help="exact call site")
    ex.add_argument("--context", help="text in the context, or a request path")
    ex.add_argument("--pid", help="process id")
    ex.set_defaults(func=_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
