"""4. Live latency: from capture in one process to the event on a dashboard websocket.

A generator process (this module run as ``python -m bench.live gen ...``) is a Django
process with lockwatch's backend and ``CAPTURE_QUERIES='all'``: it runs real statements
on a real SQLite file (three SELECTs to one autocommit INSERT), paced to 100, 1,000 or
5,000 statements/s, so every event goes through the real capture, buffer, flusher and
store. Each event's capture time is in the store itself: ``ts + duration_ms``.

The dashboard is a real server in its own process, with a websocket client of ours
(``tests/support/ws.py``) stamping each ``batch`` frame with ``time.time()`` on arrival. An
event's latency = the arrival of the first batch whose ``first_id..last_id`` range holds
its id, minus its capture time (one machine, one clock).

- store tail: ``lockwatch serve`` (in-memory layer); its relay reads new store rows
  every 0.1 s. The generator has no channel layer.
- Redis: a real ``redis-server`` on a free port; the generator has a channels-redis
  ``CHANNEL_LAYERS``, so its flusher publishes each stored batch; the dashboard runs
  under daphne with ``bench/_live_settings.py`` (the same app, a Redis layer). Both
  paths then reach the client: the published frames (they carry ``missed_before``)
  give the Redis figure; the first arrival over either path is shown beside it.

Trials alternate path and rate, the first rotating each round.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.net import free_port
from tests.support.ws import Client

from .core import Options, Result, Table, Target
from .stats import median, rotate
from .workers import REPO

RATES = (100, 1_000, 5_000)
PATHS = ("store tail", "redis")
TARGET_P95_MS = {"store tail": 1000.0, "redis": 250.0}
TOKEN = "bench-live-token"
READS_PER_WRITE = 3


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


# -- the generator (a child process) ---------------------------------------------


def generate(rate: int, seconds: float, db: str, store: str, redis_url: str) -> dict[str, Any]:
    import django
    from django.conf import settings

    layers = {}
    if redis_url:
        layers = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [{"address": redis_url, "socket_timeout": 30}]},
            }
        }
    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        INSTALLED_APPS=["lockwatch"],
        DATABASES={
            "default": {
                "ENGINE": "lockwatch.db.backends.sqlite3",
                "NAME": db,
                "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"},
            }
        },
        LOCKWATCH={"STORE": store, "CAPTURE_QUERIES": "all", "PROJECT_ROOT": str(REPO)},
        CHANNEL_LAYERS=layers,
    )
    django.setup()
    from django.db import connection

    import lockwatch

    with connection.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS item (id INTEGER PRIMARY KEY, name TEXT)")
        cur.execute("INSERT INTO item (name) VALUES ('first')")
    lockwatch.flush(timeout=30)  # the store and (with Redis) the publisher are up
    time.sleep(0.3)
    sent = 0
    t0 = time.perf_counter()
    with connection.cursor() as cur:
        while (elapsed := time.perf_counter() - t0) < seconds:
            due = int(rate * elapsed)
            if sent >= due:
                time.sleep(0.0005)
                continue
            while sent < due:
                if sent % (READS_PER_WRITE + 1) == READS_PER_WRITE:
                    cur.execute("INSERT INTO item (name) VALUES (%s)", [f"item-{sent}"])
                else:
                    cur.execute("SELECT id, name FROM item WHERE id = %s", [sent % 50 + 1])
                    cur.fetchall()
                sent += 1
    elapsed = time.perf_counter() - t0
    lockwatch.flush(timeout=60)
    from lockwatch import pipeline

    f = pipeline.current_flusher()
    figures = f.figures() if f is not None else {}
    pipeline.shutdown()  # also stops the publisher thread
    return {"sent": sent, "elapsed": elapsed, "rate": sent / elapsed, **figures}


# -- the servers -------------------------------------------------------------------


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _wait_port(port: int, proc: Proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.proc.args[:3]} exited: {proc.log.name}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout} s")


def _env(store: Path, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return {
        **env,
        "LOCKWATCH_STORE": str(store),
        "LOCKWATCH_TOKEN": TOKEN,
        "PYTHONPATH": path,
        **extra,
    }


def start_redis(workdir: Path) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        dict(os.environ),
        workdir / "redis.log",
    )
    _wait_port(port, proc)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_dashboard(path: str, store: Path, workdir: Path, redis_url: str) -> tuple[Proc, int]:
    from lockwatch import store as store_module

    store_module.connect(store).close()  # the schema, so the relay starts at the tail
    port = free_port()
    tag = path.replace(" ", "-")
    if path == "redis":
        args = [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "lockwatch.server.asgi:application",
        ]
        env = _env(store, DJANGO_SETTINGS_MODULE="bench._live_settings", BENCH_REDIS_URL=redis_url)
    else:
        args = [
            sys.executable,
            "-m",
            "lockwatch",
            "serve",
            "--store",
            str(store),
            "--port",
            str(port),
        ]
        env = _env(store)
    proc = Proc(args, env, workdir / f"dashboard-{tag}.log")
    _wait_port(port, proc)
    return proc, port


# -- one trial ------------------------------------------------------------------------


def _last_id(store: Path) -> int:
    conn = sqlite3.connect(f"{store.as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COALESCE(max(id), 0) FROM events").fetchone()[0])
    finally:
        conn.close()


def _captured(store: Path, after: int, upto: int) -> list[tuple[int, float]]:
    conn = sqlite3.connect(f"{store.as_uri()}?mode=ro", uri=True)
    try:
        return [
            (int(i), float(ts) + (dur or 0.0) / 1000.0)
            for i, ts, dur in conn.execute(
                "SELECT id, ts, duration_ms FROM events WHERE id > ? AND id <= ?", (after, upto)
            )
        ]
    finally:
        conn.close()


def trial(
    path: str,
    rate: int,
    seconds: float,
    workdir: Path,
    store: Path,
    client: Client,
    redis_url: str,
    tag: str,
) -> dict[str, Any]:
    before = _last_id(store)
    seen_from = len(client.frames)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.live",
            "gen",
            str(rate),
            str(seconds),
            str(workdir / f"app-{tag}.sqlite3"),
            str(store),
            redis_url if path == "redis" else "",
        ],
        cwd=REPO,
        env=_env(store),
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"generator failed: {done.stderr[-2000:]}")
    gen = json.loads(done.stdout.strip().splitlines()[-1])
    upto = _last_id(store)
    # Wait until the client has heard of the last event (or give up after 5 s).
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if any((f.get("last_id") or 0) >= upto for _, f in client.frames[seen_from:]):
            break
        time.sleep(0.05)
    time.sleep(0.3)  # the other path's frame for the same events, with Redis
    frames = [(t, f) for t, f in client.frames[seen_from:] if f.get("type") == "batch"]
    captured = _captured(store, before, upto)

    def latencies(only_published: bool) -> list[float]:
        ranges = sorted(
            (f["first_id"], f["last_id"], t)
            for t, f in frames
            if f.get("first_id") is not None and ("missed_before" in f or not only_published)
        )
        out = []
        for event_id, at in captured:
            hits = [t for a, b, t in ranges if a <= event_id <= b]
            if hits:
                out.append((min(hits) - at) * 1000.0)
        return out

    first = latencies(False)
    published = latencies(True) if path == "redis" else []
    return {
        "path": path,
        "rate": rate,
        "generator": gen,
        "events": len(captured),
        "first_ms": first,
        "published_ms": published,
        "frames": len(frames),
    }


def run(opts: Options) -> Result:
    seconds = 2.0 if opts.quick else 5.0
    rounds = 1 if opts.quick else 3
    redis, redis_url = start_redis(opts.workdir)
    servers: dict[str, tuple[Proc, int, Path]] = {}
    clients: dict[str, Client] = {}
    trials: list[dict[str, Any]] = []
    try:
        for path in PATHS:
            store = opts.workdir / f"store-{path.replace(' ', '-')}.sqlite3"
            proc, port = start_dashboard(path, store, opts.workdir, redis_url)
            servers[path] = (proc, port, store)
        for path, (_, port, _) in servers.items():
            deadline = time.monotonic() + 30
            while True:  # the socket opens before Django is loaded
                try:
                    clients[path] = Client(port, TOKEN)
                    break
                except (ConnectionError, OSError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            clients[path].wait_for("hello")
        plan = [(p, r) for p in PATHS for r in RATES]
        for n in range(rounds):
            for i, key in enumerate(rotate([f"{p}|{r}" for p, r in plan], n)):
                p, r = key.split("|")
                print(
                    f"[bench] live: round {n + 1}/{rounds} {p} {r}/s", file=sys.stderr, flush=True
                )
                store = servers[p][2]
                trials.append(
                    trial(
                        p, int(r), seconds, opts.workdir, store, clients[p], redis_url, f"{n}-{i}"
                    )
                )
    finally:
        for c in clients.values():
            c.close()
        for proc, _, _ in servers.values():
            proc.stop()
        redis.stop()

    res = Result()
    rows = []
    figures: dict[str, dict[int, dict[str, float]]] = {p: {} for p in PATHS}
    for path in PATHS:
        for rate in RATES:
            ts = [t for t in trials if t["path"] == path and t["rate"] == rate]
            events = sum(t["events"] for t in ts)
            achieved = median([t["generator"]["rate"] for t in ts])
            cols: list[tuple[str, list[float]]] = [
                ("first arrival", sum((t["first_ms"] for t in ts), []))
            ]
            if path == "redis":
                cols.insert(0, ("published via Redis", sum((t["published_ms"] for t in ts), [])))
            for label, lat in cols:
                p50, p95 = _pct(lat, 50), _pct(lat, 95)
                if label != "first arrival" or path == "store tail":
                    figures[path][rate] = {
                        "p50": p50,
                        "p95": p95,
                        "max": max(lat, default=0.0),
                        "coverage": len(lat) / max(events, 1),
                    }
                rows.append(
                    [
                        path,
                        label,
                        f"{rate:,}",
                        f"{achieved:,.0f}",
                        f"{events:,}",
                        f"{len(lat) / max(events, 1) * 100:.1f}%",
                        f"{p50:.0f}",
                        f"{p95:.0f}",
                        f"{max(lat, default=0.0):.0f}",
                    ]
                )
    res.tables.append(
        Table(
            [
                "path",
                "frames counted",
                "offered events/s",
                "achieved",
                "events",
                "delivered",
                "p50 ms",
                "p95 ms",
                "max ms",
            ],
            rows,
            f"Capture → websocket, {rounds} round(s) of {seconds:g} s per path and rate",
        )
    )
    for path in PATHS:
        worst = max(figures[path].values(), key=lambda f: f["p95"])
        rate = max(figures[path], key=lambda r: figures[path][r]["p95"])
        limit = TARGET_P95_MS[path]
        res.targets.append(
            Target(
                f"p95 ≤ {limit:,.0f} ms ({path}), every rate",
                f"worst p95 {worst['p95']:.0f} ms at {rate:,}/s",
                worst["p95"] <= limit
                and all(f["coverage"] >= 0.99 for f in figures[path].values()),
            )
        )
    res.method = [
        "Generator: a Django process with lockwatch's backend (`CAPTURE_QUERIES='all'`,"
        f" defaults otherwise: FLUSH_INTERVAL 0.1 s) running real statements on a WAL file,"
        f" {READS_PER_WRITE} SELECTs to 1 autocommit INSERT, paced to the offered rate"
        " (one event per statement). Capture time of an event = its stored `ts + duration_ms`.",
        "Dashboard: store tail = `lockwatch serve` (in-memory layer, relay polls the store"
        " every 0.1 s); Redis = the same ASGI app under daphne with a channels-redis layer"
        " (`bench/_live_settings.py`) on a fresh `redis-server`, the generator publishing"
        " through its own channels-redis `CHANNEL_LAYERS`.",
        "Client: `tests/support/ws.py` with `Authorization: Token`, stamping each frame on arrival;"
        " latency = arrival of the first `batch` whose first_id..last_id holds the event"
        " minus its capture time. 'published via Redis' uses only the frames the generator's"
        " flusher published (they carry `missed_before`); 'delivered' = events covered.",
        f"{rounds} round(s); each round runs every path × rate for {seconds:g} s, the first"
        " trial rotating; latencies pooled over rounds.",
    ]
    res.notes.append(
        "- Redis hosts are given as `{'address': URL, 'socket_timeout': 30}`, in the dashboard"
        " and in the generator. With a bare URL and redis-py 8 (default socket_timeout 5 s),"
        " channels-redis's 5 s blocking pop on an idle consumer raises `TimeoutError: Timeout"
        " reading from ...` after 5 s without events, and daphne drops the websocket (seen"
        " here on the first run; redis-py issue #4091)."
    )
    tail, red = figures["store tail"], figures["redis"]
    res.summary = "p95 " + ", ".join(
        f"{r:,}/s: {tail[r]['p95']:.0f} ms tail, {red[r]['p95']:.0f} ms Redis" for r in RATES
    )
    res.data = {
        "figures": figures,
        "trials": [{k: v for k, v in t.items() if not k.endswith("_ms")} for t in trials],
    }
    return res


if __name__ == "__main__":
    if sys.argv[1:2] == ["gen"]:
        a = sys.argv[2:]
        print(json.dumps(generate(int(a[0]), float(a[1]), a[2], a[3], a[4] if len(a) > 4 else "")))
