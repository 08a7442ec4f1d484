"""lockwatch: export the store's events as CSV, ask the doctor what to change, or serve the
live dashboard."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lockwatch import __version__
from lockwatch.server import public_url

if TYPE_CHECKING:
    from lockwatch.conf import Alerts


def _store_path(value: str | None) -> Path:
    path = value or os.environ.get("LOCKWATCH_STORE") or "lockwatch.sqlite3"
    return Path(path).expanduser().resolve()


def _export(args: argparse.Namespace) -> int:
    import sqlite3

    from lockwatch import store
    from lockwatch.store import export, reading
    from lockwatch.store.filters import FilterError, parse

    try:
        filters = parse(
            reading.text_options({
                "since": args.since, "until": args.until, "kind": args.kind,
                "classification": args.classification, "call_site": args.call_site,
                "context": args.context, "pid": args.pid,
            })
        )  # fmt: skip
        conn = reading.open_store(_store_path(args.store))
    except (FilterError, store.StoreError) as exc:
        print(f"lockwatch export: error: {exc}", file=sys.stderr)
        return 2
    progress = None
    try:
        if sys.stderr.isatty():
            total = export.count(conn, filters)
            if total > 50_000:

                def progress(n: int) -> None:
                    width = 30
                    done = int(width * n / total)
                    bar = "#" * done + "." * (width - done)
                    print(f"\r[{bar}] {n:,}/{total:,} events", end="", file=sys.stderr, flush=True)

        lines = export.prepare(conn, filters, progress)  # reads the store before any output
    except sqlite3.DatabaseError as exc:
        print(f"lockwatch export: error: the store cannot be read: {exc}", file=sys.stderr)
        return 2
    out = sys.stdout
    if args.output:
        out = open(args.output, "w", newline="", encoding="utf-8")  # noqa: SIM115
    try:
        for line in lines:
            # stdout may be a terminal: no escape sequence from the data reaches it.
            out.write(line if args.output else export.terminal_safe(line))
    except BrokenPipeError:
        return 0
    except sqlite3.DatabaseError as exc:  # damaged further in: the output is cut short
        print(f"lockwatch export: error: the store cannot be read: {exc}", file=sys.stderr)
        return 2
    finally:
        if out is not sys.stdout:
            out.close()
        if progress is not None:
            print(file=sys.stderr)
    return 0


def _project(settings_module: str) -> tuple[Path, list[str]]:
    """Set up the Django project (from the current folder, as manage.py does): its store,
    and lockwatch's checks on it, the deploy advice included (``check --deploy``)."""
    sys.path.insert(0, os.getcwd())
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    import django
    from django.core import checks

    django.setup()
    from lockwatch import conf

    found = checks.run_checks(tags=["lockwatch"], include_deployment_checks=True)
    lines = []
    for m in sorted(found, key=lambda m: (-m.level, m.id or "")):
        lines.append(f"- {m.id}: {m.msg}")
        if m.hint:
            lines.append(f"  {m.hint}")
    return conf.get_config().store, lines


def _doctor(args: argparse.Namespace) -> int:
    import sqlite3

    from lockwatch import doctor, store
    from lockwatch.store import reading
    from lockwatch.store.filters import FilterError, parse_time

    advice: list[str] | None = None
    project_store: Path | None = None
    if args.settings:
        try:
            project_store, advice = _project(args.settings)
        except Exception as exc:  # the project's own import error, shown in one line
            print(f"lockwatch doctor: error: cannot load {args.settings}: {exc!r}", file=sys.stderr)
            return 2
    path = _store_path(args.store) if args.store or project_store is None else project_store
    try:
        since = parse_time("since", args.since) if args.since else None
        conn = None if advice is not None and not path.exists() else reading.open_store(path)
        found = doctor.findings(conn, since) if conn is not None else []
    except (FilterError, store.StoreError) as exc:
        print(f"lockwatch doctor: error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:
        print(f"lockwatch doctor: error: the store cannot be read: {exc}", file=sys.stderr)
        return 2
    if conn is None:
        print(f"No events yet: no store at {path}.")
    elif not found:
        print("No findings: nothing in the store points at a change.")
    for n, f in enumerate(found, 1):
        print(f"{n}. {f.title}: {f.change}.")
        print(f"   Evidence: {f.evidence}.")
    if advice is not None:
        print(f"\nConfiguration ({args.settings}):")
        print("\n".join(advice) if advice else "- nothing to change.")
    return 0


def _serve_settings(args: argparse.Namespace) -> tuple[Alerts | None, Path | None]:
    """LOCKWATCH["ALERTS"], checked, and the project's store: from ``--settings MODULE``
    (imported, not set up: this process runs the dashboard's own settings), else from
    ``$LOCKWATCH_ALERTS`` (JSON). Raises ValueError with a one-line reason."""
    import importlib
    import json

    from lockwatch import conf

    if args.settings:
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(args.settings)
        except Exception as exc:  # the project's own import error, shown in one line
            raise ValueError(f"cannot load {args.settings}: {exc!r}") from None
        user, base = getattr(module, "LOCKWATCH", None), getattr(module, "BASE_DIR", None)
        try:
            cfg = conf.build(user, base)
        except conf.ConfigError as exc:
            raise ValueError(f"{args.settings}: {exc}") from None
        return cfg.alerts, cfg.store
    raw = os.environ.get("LOCKWATCH_ALERTS", "").strip()
    if not raw:
        return None, None
    try:
        alerts = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"$LOCKWATCH_ALERTS is not JSON: {exc}") from None
    try:
        return conf.build({"ALERTS": alerts}).alerts, None
    except conf.ConfigError as exc:
        raise ValueError(f"$LOCKWATCH_ALERTS: {exc}") from None


def _serve(args: argparse.Namespace) -> int:
    """Run the dashboard under daphne, in this process, reading the store read-only."""
    import secrets

    try:
        alerts, project_store = _serve_settings(args)
    except ValueError as exc:
        print(f"lockwatch serve: error: {exc}", file=sys.stderr)
        return 2
    store_path = _store_path(args.store) if args.store or not project_store else project_store
    token = os.environ.get("LOCKWATCH_TOKEN", "").strip() or secrets.token_urlsafe(24)
    os.environ.update(
        LOCKWATCH_STORE=str(store_path),
        LOCKWATCH_TOKEN=token,
        LOCKWATCH_HOST=args.host,
        LOCKWATCH_PROXY_HEADERS="1" if args.proxy_headers else "",
        LOCKWATCH_PUBLIC_URL=args.public_url or "",
        DJANGO_SETTINGS_MODULE="lockwatch.server.settings",
    )
    if args.metrics_call_sites is not None:
        os.environ["LOCKWATCH_METRICS_CALL_SITES"] = str(args.metrics_call_sites)
    if args.metrics_allow is not None:
        os.environ["LOCKWATCH_METRICS_ALLOW"] = ",".join(str(n) for n in args.metrics_allow)
    try:
        from lockwatch.server import run
    except ImportError as exc:  # daphne is a dependency: only a broken install lacks it
        print(
            f"lockwatch serve: error: {exc}; the dashboard needs channels, daphne and plotly, "
            "which pip install lockwatch installs with it",
            file=sys.stderr,
        )
        return 2
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    shown = f"[{shown}]" if ":" in shown else shown
    if not store_path.exists():
        print(f"lockwatch serve: no store at {store_path} yet; waiting for events", flush=True)
    base = args.public_url or f"http://{shown}:{args.port}"
    print(
        f"lockwatch dashboard for {store_path}\n"
        f"    {base}/?token={token}\n"
        "Open that URL to log in (set LOCKWATCH_TOKEN to keep one token across restarts).",
        flush=True,
    )
    run.serve(args.host, args.port, args.proxy_headers, alerts=alerts, dashboard=base)
    return 0


def _networks(value: str) -> list[Any]:
    from lockwatch.server.metricsview import networks

    try:
        return networks(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if not 0 <= n <= 1000:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number from 0 to 1000")
    return n


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

    serve = sub.add_parser("serve", help="run the live dashboard (daphne)")
    serve.add_argument(
        "--store", help="the store file (default $LOCKWATCH_STORE or ./lockwatch.sqlite3)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--proxy-headers", action="store_true",
        help="behind a reverse proxy: trust its X-Forwarded-For and X-Forwarded-Proto",
    )  # fmt: skip
    serve.add_argument(
        "--public-url", type=public_url, metavar="URL",
        help="the address users open through the proxy, e.g. https://lockwatch.example.com",
    )  # fmt: skip
    serve.add_argument(
        "--metrics-allow", type=_networks, metavar="ADDRESSES",
        help="let Prometheus scrape /metrics without the token from these addresses or"
        " networks, comma-separated (e.g. 127.0.0.1,10.0.0.0/8); others need"
        " 'Authorization: Bearer <token>'",
    )  # fmt: skip
    serve.add_argument(
        "--metrics-call-sites", type=_count, metavar="N",
        help="/metrics also counts busy errors and hold time by call site, for the N call"
        " sites with the most (default 0: no call-site label)",
    )  # fmt: skip
    serve.add_argument(
        "--settings", metavar="MODULE",
        help="read LOCKWATCH (its STORE and ALERTS) from this Django settings module, e.g."
        " mysite.settings, run from its folder (default: ALERTS from $LOCKWATCH_ALERTS, JSON)",
    )  # fmt: skip
    serve.set_defaults(func=_serve)

    doc = sub.add_parser("doctor", help="say what to change, from the evidence in the store")
    doc.add_argument(
        "--store",
        help="the store file (default $LOCKWATCH_STORE or ./lockwatch.sqlite3; with --settings, "
        "the project's store)",
    )
    doc.add_argument("--since", help="ISO-8601 time or an age: 15m, 2h, 1d")
    doc.add_argument(
        "--settings",
        metavar="MODULE",
        help="also check this Django project's configuration (e.g. mysite.settings, run from "
        "its folder), as manage.py check --deploy does",
    )
    doc.set_defaults(func=_doctor)

    from lockwatch import run

    run.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
