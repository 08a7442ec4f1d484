"""2. Under load: the demo shop under ``gunicorn -w 4``, with lockwatch and without.

Two alternatives of the same demo project (``demo/``, Django's defaults, so the
read-then-write endpoint meets real ``upgrade`` errors): ``demoproject.settings``
(lockwatch's backend, app and middleware, as a user sets it up) and
``bench._demo_plain_settings`` (Django's own backend, no lockwatch at all). Each run
copies a freshly migrated database, starts gunicorn, drives it with ``demo/load.py``
(the read-then-write ``/checkout/`` and the plain-write ``/visit/``), then stops
gunicorn with SIGTERM so the workers flush their last events. Runs alternate, the
first alternative rotating each round.

Besides requests/s, each run reads the workers' CPU time from /proc: CPU per request
hardly moves when other work takes cores away, so it shows lockwatch's cost even on a
noisy machine. Full runs add two diagnostic alternatives: lockwatch with ``EXACT_WAITS``
off, to tell its busy handler from the rest of lockwatch, and plain Django spending a
fixed CPU cost before each statement, to tell what lockwatch's CPU alone does to the 503s.

The second table is issue 7's load check: 50 clients against each alternative, the
workers' RSS summed from /proc every 0.5 s, and the store's ``processes`` counters.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.net import free_port

from .core import Options, Result, Table, Target, fmt, ratio
from .stats import median, paired_ratios, quartiles, rotate
from .workers import REPO, Child, Protocol

DEMO = REPO / "demo"
ALTERNATIVES = {"plain": "bench._demo_plain_settings", "lockwatch": "demoproject.settings"}
# Full runs add diagnostics: lockwatch without its busy handler (SQLite's default one
# instead), to tell its hand-off from the rest of lockwatch; and plain Django spending about
# lockwatch's CPU per request and nothing else, to tell what that CPU alone does to the
# 503s. Each: (settings module, environment).
BURN_US = 250
DIAGNOSTIC: dict[str, tuple[str, dict[str, str]]] = {
    "lockwatch, EXACT_WAITS off": (
        "bench._demo_variant_settings",
        {"BENCH_LOCKWATCH": '{"EXACT_WAITS": false}'},
    ),
    f"plain + {BURN_US} µs CPU per statement": (
        "bench._demo_burn_settings",
        {"BENCH_BURN_US": str(BURN_US)},
    ),
}
ENDPOINTS = ("checkout", "visit")
WORKERS = 4
CLIENTS = 10
STRESS_CLIENTS = 50
TARGET_RATIO = 0.98
SAMPLE_EVERY = 0.5


def _settings(alternative: str) -> tuple[str, dict[str, str]]:
    """(settings module, environment) of an alternative."""
    if alternative in DIAGNOSTIC:
        return DIAGNOSTIC[alternative]
    return ALTERNATIVES[alternative], {}


def _env(alternative: str, db: Path, store: Path) -> dict[str, str]:
    settings, extra = _settings(alternative)
    path = [str(REPO), str(DEMO), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": settings,
        "DEMO_DB": str(db),
        "LOCKWATCH_STORE": str(store),
        "BENCH_LOCKWATCH": "",
        "BENCH_BURN_US": "",
        "PYTHONPATH": os.pathsep.join(filter(None, path)),
        **extra,
    }
    env.pop("DEMO_FIXED", None)  # phase 1 of the demo: Django's defaults
    return env


def migrated(workdir: Path) -> Path:
    """A migrated database, copied for every run so each starts from the same file."""
    db = workdir / "template.sqlite3"
    env = _env("plain", db, workdir / "unused-store.sqlite3")
    subprocess.run(
        [sys.executable, str(DEMO / "manage.py"), "migrate", "-v0"],
        cwd=REPO,
        env=env,
        check=True,
        timeout=120,
    )
    return db


# -- RSS of the gunicorn workers ------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces; the ppid is the second field after ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


def _cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """utime + stime of these processes: (all threads, threads other than the main one).

    A sync gunicorn worker serves requests on its main thread; its other threads are
    lockwatch's (the flusher, and the live publisher when a channel layer is set).
    """
    total = others = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks = int(fields[11]) + int(fields[12])
            total += ticks
            others += ticks if int(tid) != pid else 0
    hz = os.sysconf("SC_CLK_TCK")
    return total / hz, others / hz


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class RssSampler:
    master: int
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # t, MB, workers
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(SAMPLE_EVERY):
            pids = _children(self.master)
            total = sum(_rss_kb(p) for p in pids) / 1024.0
            self.samples.append((time.monotonic() - t0, total, len(pids)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


# -- one run --------------------------------------------------------------------


class Shop:
    """The demo under gunicorn, on a free port, until stop()."""

    def __init__(
        self, alternative: str, db: Path, store: Path, log: Path, workers: int = WORKERS
    ) -> None:
        self.workers = workers
        self.port = free_port()
        self.env = _env(alternative, db, store)
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--chdir",
                str(DEMO),
                "demoproject.wsgi",
                "-w",
                str(workers),
                "-b",
                f"127.0.0.1:{self.port}",
                "--graceful-timeout",
                "10",
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_up(self) -> None:
        subprocess.run(
            [
                sys.executable,
                str(DEMO / "load.py"),
                "--port",
                str(self.port),
                "--wait-only",
                "--wait",
                "60",
            ],
            cwd=REPO,
            check=True,
            timeout=90,
        )
        # All four workers answer GET / once, so none is still importing Django when
        # the timed load starts.
        deadline = time.monotonic() + 30
        while len(_children(self.proc.pid)) < self.workers and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self) -> None:
        # SIGTERM: gunicorn stops its workers gracefully; their flushers write at exit.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _drive(port: int, clients: int, seconds: float, out: Path) -> dict[str, Any]:
    subprocess.run(
        [
            sys.executable,
            str(DEMO / "load.py"),
            "--port",
            str(port),
            "--clients",
            str(clients),
            "--seconds",
            str(seconds),
            "--endpoints",
            ",".join(ENDPOINTS),
            "--json",
            str(out),
        ],
        cwd=REPO,
        check=True,
        timeout=seconds + 120,
        stdout=subprocess.DEVNULL,
    )
    result = json.loads(out.read_text())
    eps = result["endpoints"]
    total = {
        k: sum(int(e[k]) for e in eps.values()) for k in ("requests", "ok", "locked", "failed")
    }
    return {
        **total,
        "rps": total["requests"] / result["elapsed"],
        "elapsed": result["elapsed"],
        "endpoints": eps,
    }


def _processes(store: Path) -> dict[str, int] | None:
    if not store.exists():
        return None
    conn = sqlite3.connect(f"{store.as_uri()}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT count(*), COALESCE(sum(accepted), 0), COALESCE(sum(dropped), 0),"
            " COALESCE(sum(lost), 0), COALESCE(sum(store_errors), 0),"
            " COALESCE(sum(capture_errors), 0) FROM processes"
        ).fetchone()
        (events,) = conn.execute("SELECT count(*) FROM events").fetchone()
    finally:
        conn.close()
    keys = ("processes", "accepted", "dropped", "lost", "store_errors", "capture_errors")
    return {**dict(zip(keys, map(int, row), strict=True)), "events": int(events)}


def trial(
    alternative: str,
    tag: str,
    workdir: Path,
    template: Path,
    clients: int,
    seconds: float,
    rss: bool = False,
    workers: int = WORKERS,
    inspect: Callable[[Path], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One run of an alternative; ``inspect(store)`` adds figures read from its store."""
    db = workdir / f"{tag}.sqlite3"
    store = workdir / f"{tag}-store.sqlite3"
    shutil.copyfile(template, db)
    shop = Shop(alternative, db, store, workdir / f"{tag}.log", workers)
    sampler = None
    try:
        shop.wait_up()
        if rss:
            sampler = RssSampler(shop.proc.pid)
            sampler.start()
        workers = _children(shop.proc.pid)
        cpu0, bg0 = _cpu_seconds(workers)
        out = _drive(shop.port, clients, seconds, workdir / f"{tag}.json")
        # CPU the workers spent per request: unlike requests/s, it hardly moves when
        # other work on the machine takes cores away.
        cpu1, bg1 = _cpu_seconds(workers)
        out["cpu_ms"] = (cpu1 - cpu0) * 1000 / max(out["requests"], 1)
        out["background_cpu_ms"] = (bg1 - bg0) * 1000 / max(out["requests"], 1)
    finally:
        if sampler is not None:
            sampler.stop()
        shop.stop()
    out["store"] = _processes(store) if alternative != "plain" else None
    if inspect is not None and alternative != "plain" and store.exists():
        out.update(inspect(store))
    if sampler is not None:
        out["rss"] = sampler.samples
    for p in workdir.glob(f"{tag}*.sqlite3*"):
        p.unlink()
    return out


# -- where a worker's time goes (a child process, no server) --------------------------


def quiet_child() -> None:
    """``python -m bench.load quiet``: requests through Django's test client, no
    contention, in rounds the driver asks for; CPU per request split into the request's
    own thread and the rest (lockwatch's flusher), and a pyinstrument profile on demand."""
    protocol = Protocol()  # before django.setup(), which may print
    import django

    django.setup()
    from django.test import Client

    import lockwatch
    from lockwatch import pipeline

    from .profiling import package_dir, profile, summary

    client = Client(HTTP_HOST="127.0.0.1")
    paths = [f"/{ep}/" for ep in ENDPOINTS]

    def requests(k: int) -> None:
        for i in range(k):
            client.post(paths[i % len(paths)])

    def round_(cmd: dict[str, Any]) -> dict[str, float]:
        n = cmd["n"]
        p0, t0 = time.process_time(), time.thread_time()
        requests(n)
        pipeline.flush(timeout=30)  # the flusher's work for these requests counts
        p1, t1 = time.process_time(), time.thread_time()
        return {"cpu_ms": (p1 - p0) * 1000 / n, "request_thread_ms": (t1 - t0) * 1000 / n}

    def profile_(cmd: dict[str, Any]) -> dict[str, Any]:
        import demoproject

        session = profile(lambda: requests(cmd["n"]), interval=0.0002)
        hosts = (package_dir(django), str(DEMO) + os.sep, package_dir(demoproject))
        return {"profile": summary(session, (package_dir(lockwatch),), hosts, cmd["n"], top=10)}

    protocol.serve({"round": round_, "profile": profile_})


def quiet_rounds(workdir: Path, template: Path, n: int, rounds: int) -> dict[str, Any]:
    """Plain and lockwatch without contention, one process each, rounds interleaved."""
    children: dict[str, Child] = {}
    try:
        for alt in ALTERNATIVES:
            db = workdir / f"quiet-{alt}.sqlite3"
            shutil.copyfile(template, db)
            env = _env(alt, db, workdir / f"quiet-{alt}-store.sqlite3")
            children[alt] = Child(alt, [sys.executable, "-m", "bench.load", "quiet"], env)
        samples: dict[str, list[dict[str, float]]] = {alt: [] for alt in children}
        for child in children.values():  # warm-up: imports, caches, the flusher thread
            child.ask(cmd="round", n=max(n // 10, 20))
        for r in range(rounds):
            for alt in rotate(list(children), r):
                samples[alt].append(children[alt].ask(cmd="round", n=n))
        prof = children["lockwatch"].ask(cmd="profile", n=n // 2)["profile"]
    finally:
        for child in children.values():
            child.close()
    cpu = {alt: [s["cpu_ms"] for s in ss] for alt, ss in samples.items()}
    return {
        "samples": samples,
        "cpu_ms": {alt: median(v) for alt, v in cpu.items()},
        "added_ms": median([a - b for a, b in zip(cpu["lockwatch"], cpu["plain"], strict=True)]),
        "request_thread_ms": median([s["request_thread_ms"] for s in samples["lockwatch"]]),
        "profile": prof,
    }


# -- the buffer's memory bound ----------------------------------------------------


def buffered_bytes(n: int = 20_000) -> float:
    """Bytes a buffered record holds: records like capture's, each with its own SQL text
    (Django builds a new string per statement), measured with tracemalloc."""
    from tests.support.records import Unit

    unit = Unit(str(REPO / "demo.sqlite3"))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held: list[Any] = []
    while len(held) < n:
        for rec in unit.records():
            sql = getattr(rec, "sql", None)
            held.append(rec._replace(sql="".join(list(sql))) if sql else rec)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / len(held)


def _rss_summary(samples: list[tuple[float, float, int]]) -> dict[str, float]:
    full = [mb for _, mb, n in samples if n >= WORKERS] or [mb for _, mb, _ in samples]
    q = max(len(full) // 4, 1)
    half = full[len(full) // 2 :]
    # MB per minute over the second half: is it still rising at the end?
    slope = (half[-1] - half[0]) / (len(half) * SAMPLE_EVERY) * 60 if len(half) > 1 else 0.0
    return {
        "first_mb": median(full[:q]),  # the first quarter of the run
        "last_mb": median(full[-q:]),  # the last quarter
        "peak_mb": max(full) if full else float("nan"),
        "growth_mb": median(full[-q:]) - median(full[:q]),
        "slope_mb_min": slope,
    }


def _main_table(runs: dict[str, list[dict[str, Any]]], seconds: float, rounds: int) -> Table:
    rows = []
    for n, ts in runs.items():
        rps = [t["rps"] for t in ts]
        share = [t["locked"] / max(t["requests"], 1) for t in ts]
        rows.append(
            [
                n,
                fmt(median(rps)),
                f"{min(rps):.1f}–{max(rps):.1f}",
                f"{median([t['cpu_ms'] for t in ts]):.2f}",
                f"{median([t['background_cpu_ms'] for t in ts]):.2f}",
                fmt(median([t["requests"] for t in ts]), 0),
                fmt(median([t["locked"] for t in ts]), 0),
                f"{median(share) * 100:.1f}% ({min(share) * 100:.1f}–{max(share) * 100:.1f}%)",
                sum(t["failed"] for t in ts),
            ]
        )
    return Table(
        [
            "alternative",
            "requests/s (median)",
            "range over rounds",
            "workers' CPU ms/request",
            "of which other threads (flusher)",
            "requests",
            "503s",
            "503 share (range)",
            "other failures (all rounds)",
        ],
        rows,
        f"{CLIENTS} clients, {seconds:g} s per run, {rounds} rounds, /checkout/ + /visit/",
    )


def run(opts: Options) -> Result:
    seconds = 3.0 if opts.quick else 10.0
    rounds = 2 if opts.quick else 5
    stress_seconds = 10.0 if opts.quick else 60.0
    template = migrated(opts.workdir)
    names = list(ALTERNATIVES) + ([] if opts.quick else list(DIAGNOSTIC))
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(rounds):
        for i, name in enumerate(rotate(names, r)):
            print(f"[bench] load: round {r + 1}/{rounds} {name}", file=sys.stderr, flush=True)
            runs[name].append(trial(name, f"r{r}-{i}", opts.workdir, template, CLIENTS, seconds))
    stress: dict[str, dict[str, Any]] = {}
    for name in rotate(list(ALTERNATIVES), rounds):
        print(f"[bench] load: {STRESS_CLIENTS} clients, {name}", file=sys.stderr, flush=True)
        stress[name] = trial(
            name, f"stress-{name}", opts.workdir, template, STRESS_CLIENTS, stress_seconds, rss=True
        )

    res = Result()
    res.tables.append(_main_table(runs, seconds, rounds))
    rps = {n: [t["rps"] for t in runs[n]] for n in names}
    share = {n: [t["locked"] / max(t["requests"], 1) for t in runs[n]] for n in names}
    cpu = {n: median([t["cpu_ms"] for t in runs[n]]) for n in names}
    paired = {n: paired_ratios(rps[n], rps["plain"]) for n in names if n != "plain"}
    r_med = median(paired["lockwatch"])
    r_q1, r_q3 = quartiles(paired["lockwatch"])
    per_ep = []
    for n in names:
        for ep in ENDPOINTS:
            reqs = [t["endpoints"][ep]["requests"] for t in runs[n]]
            locked = [t["endpoints"][ep]["locked"] for t in runs[n]]
            p50 = [t["endpoints"][ep]["p50_ms"] for t in runs[n]]
            per_ep.append(
                [n, ep, fmt(median(reqs), 0), fmt(median(locked), 0), fmt(median(p50), 0)]
            )
    res.tables.append(
        Table(
            ["alternative", "endpoint", "requests", "503s", "p50 ms"],
            per_ep,
            "Per endpoint (medians over rounds)",
        )
    )

    # Noise in the error counts: each alternative's own spread across rounds. The 503
    # shares are equal within noise when the medians differ by less than the wider range.
    noise = max(max(share[n]) - min(share[n]) for n in ("plain", "lockwatch"))
    diff = median(share["lockwatch"]) - median(share["plain"])

    per_record = buffered_bytes()
    from lockwatch.conf import DEFAULTS

    buffer_mb = DEFAULTS["BUFFER_SIZE"] * per_record / 2**20
    bound_mb = WORKERS * buffer_mb
    srows = []
    rss = {n: _rss_summary(stress[n].get("rss", [])) for n in stress}
    for n in ALTERNATIVES:
        t, s, st = stress[n], rss[n], stress[n]["store"]
        srows.append(
            [
                n,
                fmt(t["requests"], 0),
                fmt(t["rps"]),
                fmt(t["locked"], 0),
                fmt(t["failed"], 0),
                f"{s['first_mb']:.1f}",
                f"{s['last_mb']:.1f}",
                f"{s['peak_mb']:.1f}",
                f"{s['growth_mb']:+.1f}",
                f"{s['slope_mb_min']:+.1f}",
                f"{st['dropped']:,} of {st['accepted']:,} (lost {st['lost']})" if st else "n/a",
            ]
        )
    res.tables.append(
        Table(
            [
                "alternative",
                "requests",
                "requests/s",
                "503s",
                "other failures",
                "workers' RSS MB, 1st quarter",
                "last quarter",
                "peak",
                "growth",
                "MB/min, 2nd half",
                "dropped (processes table)",
            ],
            srows,
            f"Issue 7 load check: {STRESS_CLIENTS} clients for {stress_seconds:g} s,"
            f" RSS summed over the {WORKERS} workers every {SAMPLE_EVERY:g} s",
        )
    )
    # The buffer bounds what captured events can add while the app runs; lockwatch's code
    # and imports are a fixed cost, so the target is judged on growth beyond plain's.
    extra = rss["lockwatch"]["peak_mb"] - rss["plain"]["peak_mb"]
    fixed = rss["lockwatch"]["first_mb"] - rss["plain"]["first_mb"]
    grew = rss["lockwatch"]["growth_mb"] - rss["plain"]["growth_mb"]
    lw_store = stress["lockwatch"]["store"] or {}
    res.targets += [
        Target(
            f"lockwatch/plain requests/s ≥ {TARGET_RATIO}",
            f"{ratio(r_med)} (paired, IQR {r_q1:.3f}–{r_q3:.3f})",
            r_med >= TARGET_RATIO,
        ),
        Target(
            "503 share equal within noise (|Δ median| ≤ widest range over rounds)",
            f"Δ {diff * 100:+.1f} points, noise {noise * 100:.1f} points",
            abs(diff) <= noise if rounds > 1 else None,
        ),
        Target(
            f"{STRESS_CLIENTS} clients: workers' RSS growth beyond plain's ≤ {WORKERS} full"
            f" buffers ({bound_mb:.1f} MB)",
            f"{grew:+.1f} MB (fixed cost at start {fixed:+.1f} MB, peak {extra:+.1f} MB;"
            f" {rss['lockwatch']['slope_mb_min']:+.1f} MB/min at the end)",
            grew <= bound_mb,
        ),
        Target(
            f"{STRESS_CLIENTS} clients: no events dropped",
            f"{lw_store.get('dropped', 0):,} dropped, {lw_store.get('lost', 0):,} lost",
            lw_store.get("dropped", 1) == 0 and lw_store.get("lost", 1) == 0,
        ),
    ]
    for n, rs in paired.items():
        if n != "lockwatch":
            res.notes.append(
                f"- {n}: {ratio(median(rs))} plain's requests/s (paired),"
                f" {cpu[n]:.2f} workers' CPU ms/request against plain's"
                f" {cpu['plain']:.2f} and lockwatch's {cpu['lockwatch']:.2f}; 503 share"
                f" {median(share[n]) * 100:.1f}% against plain's"
                f" {median(share['plain']) * 100:.1f}% and lockwatch's"
                f" {median(share['lockwatch']) * 100:.1f}%."
            )
    prof = None
    if opts.profile and not all(t.met for t in res.targets[:2]):
        from . import profiling

        n, k = (200, 2) if opts.quick else (1000, 5)
        prof = quiet_rounds(opts.workdir, template, n, k)
        lw_ms, pl_ms, thread_ms = (
            prof["cpu_ms"]["lockwatch"], prof["cpu_ms"]["plain"], prof["request_thread_ms"]
        )  # fmt: skip
        res.notes.append(
            f"- Without contention (one process per alternative, Django's test client, {k}"
            f" interleaved rounds of {n} requests, medians): {pl_ms:.2f} ms CPU/request plain,"
            f" {lw_ms:.2f} lockwatch (paired difference {prof['added_ms']:+.2f}), of which"
            f" {thread_ms:.2f} in the request's thread and {lw_ms - thread_ms:.2f} in the"
            " flusher. Under load the workers spend"
            f" {cpu['lockwatch'] - cpu['plain']:+.2f} ms/request more than plain."
        )
        res.notes += profiling.render(
            prof["profile"],
            "pyinstrument, lockwatch in the request's thread (no contention)",
            thread_ms * 1000.0,  # the unprofiled figure
        )
    res.method = [
        f"The demo shop (`demo/`, Django's defaults) under `gunicorn -w {WORKERS}`:"
        " `demoproject.settings` (lockwatch's backend, app and middleware) against"
        " `bench/_demo_plain_settings.py` (Django's sqlite3 backend, no lockwatch app or"
        " middleware, and the shop's `instrument_sqlite3()` call left out)."
        + (
            ""
            if opts.quick
            else " Diagnostics: lockwatch with `EXACT_WAITS: False`"
            " (`bench/_demo_variant_settings.py`), i.e. SQLite's own busy handler; and plain"
            f" Django spinning {BURN_US} µs of CPU before every statement"
            " (`bench/_demo_burn_settings.py`), about lockwatch's added CPU per request"
            " with nothing else of lockwatch's, to see what that CPU alone does to the 503s."
        ),
        f"Each run: a copy of one migrated database, gunicorn started and all workers up,"
        f" `demo/load.py --clients {CLIENTS} --seconds {seconds:g} --endpoints"
        f" {','.join(ENDPOINTS)}`, then SIGTERM (workers flush at exit). {rounds} rounds,"
        " alternatives alternating with the first rotating; requests/s per run from"
        " load.py, the ratio is the median of per-round paired ratios. Workers' CPU per"
        " request = their utime+stime over the load (/proc) / requests.",
        "503s are the views' `database is locked` (`upgrade` errors on /checkout/)."
        " Noise for them is the spread (max − min) of the 503 share across rounds.",
        f"Load check: {STRESS_CLIENTS} clients for {stress_seconds:g} s per alternative,"
        f" workers' VmRSS summed every {SAMPLE_EVERY:g} s; `dropped`/`lost` summed over the"
        f" store's `processes` rows. A full buffer (BUFFER_SIZE {DEFAULTS['BUFFER_SIZE']:,})"
        f" is {buffer_mb:.1f} MB per worker: {per_record:.0f} bytes per buffered record"
        " (tracemalloc over realistic capture records, each with its own SQL string).",
    ]
    res.summary = (
        f"lockwatch/plain {ratio(r_med)} requests/s; 503 share"
        f" {median(share['lockwatch']) * 100:.1f}% vs {median(share['plain']) * 100:.1f}%;"
        f" {STRESS_CLIENTS} clients: RSS growth {grew:+.1f} MB beyond plain's,"
        f" {lw_store.get('dropped', 0):,} dropped"
    )
    res.data = {
        "runs": runs,
        "ratios": paired,
        "cpu_ms": cpu,
        "stress": stress,
        "rss": rss,
        "bytes_per_record": per_record,
        "buffer_mb": buffer_mb,
        "profile": prof,
    }
    return res


if __name__ == "__main__":
    if sys.argv[1:2] == ["quiet"]:
        quiet_child()
