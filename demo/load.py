"""A small, bounded load generator for the demo shop.

A fixed number of client threads send POSTs to 127.0.0.1 (and nowhere else) for a
fixed number of seconds, then stop by themselves. Each client walks the endpoint
list round-robin, starting at its own offset, so every endpoint sees the same mix
of neighbours. A 503 is the shop saying "database is locked"; anything else that
is not a 200 is counted apart.

    python demo/load.py --port 8001 --clients 10 --seconds 15
    python demo/load.py --port 8001 --endpoints create_user,checkout --json out.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

HOST = "127.0.0.1"  # the demo only ever loads a server on this machine
ENDPOINTS = {
    "create_user": "/create_user/",
    "checkout": "/checkout/",
    "visit": "/visit/",
    "async_checkout": "/async/checkout/",
    "audit": "/audit/",
}
REQUEST_TIMEOUT = 30.0


@dataclass
class Tally:
    requests: int = 0
    ok: int = 0
    locked: int = 0  # 503: the view caught "database is locked"
    failed: int = 0  # any other status, or no response at all
    latencies: list[float] = field(default_factory=list)

    def add(self, status: int | None, seconds: float) -> None:
        self.requests += 1
        self.latencies.append(seconds)
        if status == 200:
            self.ok += 1
        elif status == 503:
            self.locked += 1
        else:
            self.failed += 1


def post(port: int, path: str) -> int | None:
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request("POST", path, body=b"")
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


def wait_until_up(port: int, timeout: float) -> dict[str, Any]:
    """The shop's GET / once a worker answers (the socket opens before Django has loaded)."""
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection(HOST, port, timeout=2)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            if response.status == 200:
                return json.loads(response.read())
        except (OSError, ValueError):
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise SystemExit(f"load: nothing answered on {HOST}:{port} within {timeout:g} s")
        time.sleep(0.1)


def run(port: int, names: Sequence[str], clients: int, seconds: float) -> dict[str, Any]:
    tallies = {name: Tally() for name in names}
    lock = threading.Lock()
    started = time.time()
    deadline = time.monotonic() + seconds

    def client(offset: int) -> None:
        i = offset
        while time.monotonic() < deadline:
            name = names[i % len(names)]
            i += 1
            t0 = time.perf_counter()
            status = post(port, ENDPOINTS[name])
            with lock:
                tallies[name].add(status, time.perf_counter() - t0)

    threads = [
        threading.Thread(target=client, args=(n,), name=f"client-{n}", daemon=True)
        for n in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        # A request in flight at the deadline may still take up to REQUEST_TIMEOUT.
        t.join(seconds + REQUEST_TIMEOUT + 5)
    elapsed = time.time() - started
    return {
        "port": port,
        "clients": clients,
        "seconds": seconds,
        "started": started,
        "elapsed": elapsed,
        "endpoints": {name: summary(t, elapsed) for name, t in tallies.items()},
    }


def summary(t: Tally, elapsed: float) -> dict[str, float | int]:
    ordered = sorted(t.latencies)
    out = asdict(t)
    del out["latencies"]
    out["rps"] = round(t.requests / elapsed, 2) if elapsed else 0.0
    out["p50_ms"] = round(1000 * ordered[len(ordered) // 2], 1) if ordered else 0.0
    out["max_ms"] = round(1000 * ordered[-1], 1) if ordered else 0.0
    return out


def print_table(result: dict[str, Any], file: TextIO | None = None) -> None:
    endpoints: dict[str, dict[str, Any]] = result["endpoints"]
    head = f"{'endpoint':<16}{'requests':>9}{'503':>7}{'failed %':>10}{'other':>7}"
    head += f"{'rps':>8}{'p50 ms':>9}{'max ms':>9}"
    print(head, file=file)
    total = {"requests": 0, "locked": 0, "failed": 0}
    for name, s in endpoints.items():
        pct = 100 * s["locked"] / s["requests"] if s["requests"] else 0.0
        print(
            f"{name:<16}{s['requests']:>9}{s['locked']:>7}{pct:>9.1f}%{s['failed']:>7}"
            f"{s['rps']:>8.1f}{s['p50_ms']:>9.0f}{s['max_ms']:>9.0f}",
            file=file,
        )
        for key in total:
            total[key] += int(s[key])
    pct = 100 * total["locked"] / total["requests"] if total["requests"] else 0.0
    rps = total["requests"] / result["elapsed"]
    print(
        f"{'all':<16}{total['requests']:>9}{total['locked']:>7}{pct:>9.1f}%{total['failed']:>7}"
        f"{rps:>8.1f}",
        file=file,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8001, help=f"the shop's port on {HOST}")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--endpoints",
        default=",".join(ENDPOINTS),
        help=f"comma-separated, from: {', '.join(ENDPOINTS)}",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the shop")
    parser.add_argument("--wait-only", action="store_true", help="wait for the shop, then exit")
    args = parser.parse_args(argv)
    if args.wait_only:
        wait_until_up(args.port, args.wait)
        return 0

    names = [n.strip() for n in args.endpoints.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENDPOINTS]
    if unknown or not names:
        parser.error(f"unknown endpoints: {unknown}; choose from {', '.join(ENDPOINTS)}")
    if not (1 <= args.clients <= 200) or not (0 < args.seconds <= 3600):
        parser.error("--clients must be 1..200 and --seconds 0..3600")

    shop = wait_until_up(args.port, args.wait)
    print(
        f"load: {args.clients} clients for {args.seconds:g} s on {HOST}:{args.port}: "
        f"{', '.join(names)}\n"
        f"      the shop runs journal_mode={shop.get('journal_mode')}, "
        f"transaction_mode={shop.get('transaction_mode')}, fixed={shop.get('fixed')}",
        flush=True,
    )
    result = run(args.port, names, args.clients, args.seconds)
    print_table(result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
