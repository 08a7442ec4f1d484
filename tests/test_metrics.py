"""/metrics (Prometheus): the figures agree with the store, who may scrape, and a real
Prometheus scraping a real `lockwatch serve` fires the shipped rules during real contention.

The expected figures are computed here from the store's rows with plain SQL and
Python, never with lockwatch's own queries or bins.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lockwatch import events, holders, store
from lockwatch.server import metrics
from tests.conftest import free_port
from tests.project.shop.models import Item
from tests.support.servers import MANAGE, ROOT, Server, child_env
from tests.support.servers import TOKEN as SERVE_TOKEN

RULES = ROOT / "contrib" / "prometheus" / "lockwatch-rules.yml"
RULES_TEST = ROOT / "contrib" / "prometheus" / "lockwatch-rules.test.yml"
DBS = ("/srv/app/db.sqlite3", "/srv/app/other.sqlite3")
# Values right on bucket bounds (ms), to pin which bucket they count in.
ON_EDGES = (1.0, 100.0, 1000.0, 2000.0)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def scrape(path: Path) -> Samples:
    return parse(generate_latest(metrics.registry_for(path)).decode())


def picked(samples: Samples, name: str, **match: str) -> dict[frozenset, float]:
    want = set(match.items())
    return {labels: v for (n, labels), v in samples.items() if n == name and want <= labels}


# -- what the store says, by plain SQL ----------------------------------------------------


def _bounds(samples: Samples, name: str) -> list[str]:
    les = {dict(lab)["le"] for (n, lab) in samples if n == f"{name}_bucket"}
    return sorted(les, key=lambda le: float("inf") if le == "+Inf" else float(le))


def expected_histogram(values: list[float], bounds: list[str]) -> dict[str, int]:
    """Cumulative counts per le: a bucket counts the values below its bound (lockwatch's
    bins are [lower, upper)), +Inf all of them."""
    return {
        le: len(values) if le == "+Inf" else sum(1 for v in values if v < float(le))
        for le in bounds
    }


class Truth:
    """Busy errors, waits and holds as rows say (the store's, or all ever written)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.busy = Counter((r["classification"], r["db"]) for r in rows if r["kind"] == "busy")
        self.waits: dict[str, list[float]] = {}
        for r in rows:
            if r["kind"] == "wait" and r["wait_ms"] is not None:
                self.waits.setdefault(r["outcome"], []).append(r["wait_ms"] / 1000)
        self.holds = [
            r["hold_ms"] / 1000
            for r in rows
            if r["kind"] in ("transaction", "query") and r["hold_ms"] is not None
        ]

    @classmethod
    def of_store(cls, path: Path) -> Truth:
        conn = sqlite3.connect(path)
        conn.row_factory = sqlite3.Row
        try:
            return cls([dict(r) for r in conn.execute("SELECT * FROM events")])
        finally:
            conn.close()

    def check(self, samples: Samples) -> None:
        busy = picked(samples, "lockwatch_busy_errors_total")
        got = {(dict(k)["classification"], dict(k)["db"]): v for k, v in busy.items() if v}
        assert got == dict(self.busy)
        bounds = _bounds(samples, "lockwatch_write_lock_hold_seconds")
        assert len(bounds) > 20
        for outcome in events.WAIT_OUTCOMES:
            values = self.waits.get(outcome, [])
            name = "lockwatch_lock_wait_seconds"
            buckets = picked(samples, f"{name}_bucket", outcome=outcome)
            assert {dict(k)["le"]: v for k, v in buckets.items()} == expected_histogram(
                values, bounds
            ), outcome
            assert samples[(f"{name}_count", frozenset({("outcome", outcome)}))] == len(values)
            assert samples[(f"{name}_sum", frozenset({("outcome", outcome)}))] == pytest.approx(
                sum(values)
            )
        name = "lockwatch_write_lock_hold_seconds"
        buckets = picked(samples, f"{name}_bucket")
        got_holds = {dict(k)["le"]: v for k, v in buckets.items()}
        assert got_holds == expected_histogram(self.holds, bounds)
        assert samples[(f"{name}_count", frozenset())] == len(self.holds)
        assert samples[(f"{name}_sum", frozenset())] == pytest.approx(sum(self.holds))


def random_rows(rng: random.Random, n: int, t0: float) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        kind = rng.choice(["busy", "wait", "wait", "transaction", "query", "query", "request"])
        ms = rng.choice(ON_EDGES) if rng.random() < 0.1 else rng.lognormvariate(2, 2.5)
        row: dict[str, Any] = {"ts": t0 + i * 0.01, "kind": kind, "pid": 1, "conn_id": 1}
        if kind != "request":
            row["db"] = rng.choice(DBS)
        if kind == "busy":
            row.update(classification=rng.choice(events.CLASSIFICATIONS), wait_ms=ms)
            row.update(call_site=f"views.py:{rng.randrange(6)} in v")
        elif kind == "wait":
            row.update(outcome=rng.choice(events.WAIT_OUTCOMES), wait_ms=ms)
        elif kind == "transaction":
            row.update(hold_ms=ms if rng.random() < 0.8 else None, duration_ms=ms + 1)
            row.update(lock_call_site=f"app.py:{rng.randrange(5)} in f", end="commit")
        elif kind == "query":
            row.update(hold_ms=ms if rng.random() < 0.5 else None, call_site="app.py:9 in g")
        out.append(events.row(**row))
    return out


def write(path: Path, rows: list[dict[str, Any]]) -> None:
    w = store.Writer(path)
    try:
        for i in range(0, len(rows), 700):
            w.write(rows[i : i + 700], [], [])
    finally:
        w.close()


def test_the_figures_agree_with_the_store_and_never_go_down(tmp_path):
    path = tmp_path / "lockwatch.sqlite3"
    rng = random.Random(16)
    t0 = time.time() - 3 * 3600  # over several hours: the first scrape reads the hourly rollup
    written = random_rows(rng, 3000, t0)
    write(path, written)
    Truth.of_store(path).check(scrape(path))  # everything in the store

    more = random_rows(rng, 1500, t0 + 40)
    write(path, more)
    written += more
    Truth.of_store(path).check(scrape(path))  # and what was stored since

    before = scrape(path)
    w = store.Writer(path)
    try:
        while w.prune(None, 1000):  # retention drops the oldest events
            pass
    finally:
        w.close()
    newest = random_rows(rng, 800, t0 + 100)
    write(path, newest)
    written += newest
    kept = Truth.of_store(path)
    samples = scrape(path)
    # What was counted stays counted: the totals are all ever stored, not what is kept.
    Truth(written).check(samples)
    assert sum(kept.busy.values()) < sum(Truth(written).busy.values())
    for key, value in before.items():
        if key[0].endswith(("_total", "_count", "_bucket")):
            assert samples[key] >= value, key


def test_a_restart_goes_on_from_the_kept_totals(tmp_path):
    path = tmp_path / "lockwatch.sqlite3"
    state = tmp_path / "state.json"
    rng = random.Random(5)
    t0 = time.time() - 600
    written = random_rows(rng, 2000, t0)
    write(path, written)

    def scrape_with(state: Path | None) -> Samples:
        registry = metrics.CollectorRegistry(auto_describe=False)
        registry.register(metrics.StoreCollector(path, state))
        return parse(generate_latest(registry).decode())

    Truth(written).check(scrape_with(state))  # the first server; it stops
    w = store.Writer(path)
    try:
        while w.prune(None, 500):
            pass
    finally:
        w.close()
    meanwhile = random_rows(rng, 400, t0 + 30)
    write(path, meanwhile)
    written += meanwhile
    Truth(written).check(scrape_with(state))  # the next one goes on
    Truth.of_store(path).check(scrape_with(None))  # without kept totals: the store's
    state.write_text("{not json")
    Truth.of_store(path).check(scrape_with(state))  # a damaged file is ignored


def test_a_scrape_that_fails_half_way_counts_nothing_twice(tmp_path, monkeypatch):
    path = tmp_path / "lockwatch.sqlite3"
    rng = random.Random(9)
    write(path, random_rows(rng, 1000, time.time() - 600))
    collector = metrics.StoreCollector(path)
    registry = metrics.CollectorRegistry(auto_describe=False)
    registry.register(collector)
    generate_latest(registry)
    write(path, random_rows(rng, 500, time.time() - 60))
    tail = collector._tail

    def tail_then_fail(*args: Any) -> None:
        tail(*args)  # counted, then the store fails (say, SQLITE_IOERR mid-read)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(collector, "_tail", tail_then_fail)
    assert parse(generate_latest(registry).decode())[("lockwatch_store_readable", frozenset())] == 0
    monkeypatch.undo()
    Truth.of_store(path).check(parse(generate_latest(registry).decode()))


def test_a_new_store_starts_the_totals_again(tmp_path):
    path = tmp_path / "lockwatch.sqlite3"
    rng = random.Random(7)
    write(path, random_rows(rng, 2000, time.time() - 60))
    scrape(path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    write(path, random_rows(rng, 300, time.time() - 30))  # ids from 1 again, fewer events
    Truth.of_store(path).check(scrape(path))


def test_call_site_labels_only_when_asked_and_only_the_top_n(tmp_path):
    path = tmp_path / "lockwatch.sqlite3"
    rng = random.Random(11)
    write(path, random_rows(rng, 2000, time.time() - 2 * 3600))
    assert not any("call_site" in name for name, _ in scrape(path))  # not by default

    def by_site(samples: Samples, name: str) -> dict[str, float]:
        return {dict(k)["call_site"]: v for k, v in picked(samples, name).items()}

    def expected() -> tuple[list[tuple[str, int]], dict[str, float]]:
        conn = sqlite3.connect(path)
        busy = Counter(
            r[0] for r in conn.execute("SELECT call_site FROM events WHERE kind = 'busy'")
        )
        held: Counter[str] = Counter()
        for lock_site, site, hold in conn.execute(
            "SELECT lock_call_site, call_site, hold_ms FROM events"
            " WHERE kind IN ('transaction', 'query') AND hold_ms IS NOT NULL"
        ):
            held[lock_site or site] += hold / 1000  # where the lock was taken
        conn.close()
        ranked = sorted(busy.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        top_held = sorted(held.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        return ranked, dict(top_held)

    collector = metrics.StoreCollector(path, None, 3)
    registry = metrics.CollectorRegistry(auto_describe=False)
    registry.register(collector)
    for _ in range(2):  # the first scrape loads, the second adds what came since
        samples = parse(generate_latest(registry).decode())
        ranked, held = expected()
        assert by_site(samples, "lockwatch_call_site_busy_errors_total") == dict(ranked)
        got = by_site(samples, "lockwatch_call_site_hold_seconds_total")
        assert got.keys() == held.keys()
        assert got == {k: pytest.approx(v) for k, v in held.items()}
        write(path, random_rows(rng, 700, time.time() - 60))


def test_health_counters_sum_the_processes_table_by_program(tmp_path):
    path = tmp_path / "lockwatch.sqlite3"
    w = store.Writer(path)
    rng = random.Random(3)
    figures = dict.fromkeys(
        ("accepted", "dropped", "capture_errors", "store_errors", "lost", "live_errors",
         "live_missed", "stored"), 0,
    )  # fmt: skip
    try:
        for pid, program in enumerate(["command:a", "command:a", "program:gunicorn"], 100):
            f = {k: rng.randrange(1000) for k in figures}
            w.report(pid, 1.0, program, "exact", f)
    finally:
        w.close()
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT program, stored, dropped, lost FROM processes").fetchall()
    conn.close()
    samples = scrape(path)
    for i, what in enumerate(("stored", "dropped", "lost"), 1):
        expected: Counter[str] = Counter()
        for r in rows:
            expected[r[0]] += r[i]
        got = picked(samples, f"lockwatch_events_{what}_total")
        assert {dict(k)["program"]: v for k, v in got.items()} == dict(expected)


def test_no_store_yet_is_a_readable_zero(tmp_path):
    path = tmp_path / "missing.sqlite3"
    samples = scrape(path)
    assert samples[("lockwatch_store_readable", frozenset())] == 0
    assert not path.exists()
    assert not holders.path_for(path).exists()  # a scrape never creates the holder table


def test_the_write_lock_held_now_by_a_real_transaction(lw, watched, tmp_path):
    db = watched()
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:
        with transaction.atomic(using=db):
            Item.objects.using(db).create(name="held")
            holding.set()
            release.wait(20)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert holding.wait(10)
        lw.flush()  # its hold row names the database
        started = time.monotonic()
        time.sleep(0.3)
        samples = scrape(lw.store)
        held = picked(samples, "lockwatch_write_lock_held_seconds")
        ages = {dict(k)["db"]: v for k, v in held.items()}
        name = os.path.realpath(tmp_path / f"{db}.sqlite3")
        assert 0.3 <= ages[name] <= time.monotonic() - started + 5, ages
    finally:
        release.set()
        thread.join(20)
    lw.flush()
    held = picked(scrape(lw.store), "lockwatch_write_lock_held_seconds")
    assert held and not any(held.values())  # let go: 0 for every database


# -- the endpoint under a real `lockwatch serve` -------------------------------------------


class MetricsServer(Server):
    extra: list[str] = []

    def command(self) -> list[str]:
        return [*super().command(), *self.extra]


@contextlib.contextmanager
def serving(folder: Path, *extra: str) -> Iterator[Server]:
    class S(MetricsServer):
        pass

    S.extra = list(extra)
    server = S(folder / "lockwatch.sqlite3", free_port(), folder / "serve.log")
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def get(server: Server, path: str = "/metrics", **headers: str) -> tuple[int, dict, str]:
    conn = HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        conn.close()


def test_serve_metrics_needs_the_bearer_token(tmp_path):
    write(tmp_path / "lockwatch.sqlite3", random_rows(random.Random(1), 500, time.time() - 60))
    with serving(tmp_path) as server:
        status, headers, _ = get(server)
        assert status == 401
        assert headers["www-authenticate"].startswith("Bearer")
        assert get(server, Authorization="Basic eDp5")[0] == 401
        assert get(server, Authorization="Bearer wrong")[0] == 403
        status, headers, body = get(server, Authorization=f"Bearer {SERVE_TOKEN}")
        assert status == 200, body
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        Truth.of_store(server.store).check(parse(body))
        kept = list((tmp_path / "dashboard-state").glob("metrics-*.json"))
        assert len(kept) == 1 and kept[0].stat().st_mode & 0o077 == 0  # the totals, private
        assert get(server, Authorization=f"Token {SERVE_TOKEN}")[0] == 200
        # Wrong tokens share the dashboard's throttle: then even the right one is refused.
        for _ in range(10):
            get(server, Authorization="Bearer wrong")
        status, _, body = get(server, Authorization=f"Bearer {SERVE_TOKEN}")
        assert status == 429, body
        assert get(server, "/", Authorization=f"Token {SERVE_TOKEN}")[0] == 429


def test_serve_metrics_from_an_allowed_address(tmp_path):
    with serving(tmp_path, "--metrics-allow", "10.0.0.0/8,127.0.0.1") as server:
        status, _, body = get(server)
        assert status == 200, body
        assert "lockwatch_store_readable 0.0" in body  # no store yet
        assert "call_site" not in body
        assert get(server, "/")[0] == 403  # only /metrics: the dashboard still needs the token
    with serving(tmp_path, "--metrics-allow", "10.0.0.0/8", "--metrics-call-sites", "2") as server:
        assert get(server)[0] == 401
        status, _, body = get(server, Authorization=f"Bearer {SERVE_TOKEN}")
        assert "# TYPE lockwatch_call_site_busy_errors_total counter" in body


@pytest.mark.parametrize(
    "option", [("--metrics-allow", "10.0.0.300"), ("--metrics-call-sites", "-1")]
)
def test_serve_refuses_a_bad_metrics_option(tmp_path, option):
    out = subprocess.run(
        [sys.executable, "-m", "lockwatch", "serve", *option],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=child_env(),
    )  # fmt: skip
    assert out.returncode == 2
    assert option[0] in out.stderr


# -- the rules, with promtool and a real Prometheus ----------------------------------------


def _require_prometheus() -> None:
    missing = [p for p in ("prometheus", "promtool") if shutil.which(p) is None]
    if missing:
        message = f"needs {' and '.join(missing)} (apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def test_the_shipped_rules_pass_promtool():
    _require_prometheus()
    check = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "3 rules found" in check.stdout
    test = subprocess.run(
        ["promtool", "test", "rules", RULES_TEST.name],
        capture_output=True, text=True, timeout=60, cwd=RULES_TEST.parent,
    )  # fmt: skip
    assert test.returncode == 0, test.stdout + test.stderr


HOLD_THRESHOLD = 3  # the test copy's; the shipped rule says 10 s


def _alerts(port: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=5) as r:
        return json.load(r)["data"]["alerts"]


def _query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)["data"]["result"]


def test_prometheus_scrapes_serve_and_the_rules_fire_on_a_long_hold(tmp_path):
    _require_prometheus()
    store_path = tmp_path / "lockwatch.sqlite3"
    project = child_env(
        LOCKWATCH_TEST_DB=str(tmp_path / "shop.sqlite3"),
        LOCKWATCH_STORE=str(store_path),
        DJANGO_SETTINGS_MODULE="tests.project.settings",
    )
    subprocess.run(
        [sys.executable, str(MANAGE), "migrate", "-v0"], cwd=ROOT, env=project,
        check=True, timeout=120, capture_output=True,
    )  # fmt: skip
    rules = RULES.read_text()
    assert "lockwatch_write_lock_held_seconds > 10" in rules
    (tmp_path / "rules.yml").write_text(
        rules.replace("held_seconds > 10", f"held_seconds > {HOLD_THRESHOLD}")
    )
    with serving(tmp_path) as server:
        port = free_port()
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [rules.yml]\n"
            "scrape_configs:\n"
            "  - job_name: lockwatch\n"
            f"    authorization: {{type: Bearer, credentials: {SERVE_TOKEN}}}\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{server.port}']}}]\n"
        )
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115
        prom = subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        hold = None
        try:
            deadline = time.monotonic() + 60
            up: list = []
            while time.monotonic() < deadline and not up:
                time.sleep(0.5)
                with contextlib.suppress(OSError):
                    up = _query(port, 'up{job="lockwatch"} == 1')
            assert up, (tmp_path / "prometheus.log").read_text()[-3000:]
            assert not [a for a in _alerts(port) if a["state"] == "firing"]
            # A real write lock, held by an instrumented process for 15 s; meanwhile a
            # writer in another process waits 1.5 s (its busy timeout) and gives up.
            ready = tmp_path / "ready"
            hold = subprocess.Popen(
                [sys.executable, str(MANAGE), "hold_lock", "--seconds", "15",
                 "--ready-file", str(ready)],
                cwd=ROOT, env=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )  # fmt: skip
            deadline = time.monotonic() + 60
            while not ready.exists():
                assert time.monotonic() < deadline and hold.poll() is None
                time.sleep(0.05)
            took = time.monotonic()
            writer = subprocess.run(
                [sys.executable, str(MANAGE), "write_one"], cwd=ROOT,
                env={**project, "LOCKWATCH_TEST_TIMEOUT": "1.5"},
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert "failed: database is locked" in writer.stdout, writer.stdout + writer.stderr
            firing: dict[str, dict] = {}
            deadline = took + 14.5  # before the hold ends (a slow machine starts write_one late)
            while time.monotonic() < deadline and len(firing) < 3:
                for a in _alerts(port):
                    if a["state"] == "firing":
                        firing.setdefault(a["labels"]["alertname"], a)
                time.sleep(0.25)
            assert set(firing) == {
                "LockwatchLongWriteLockHold", "LockwatchBusyErrors", "LockwatchSlowLockWaits",
            }, (firing, _alerts(port))  # fmt: skip
            long_hold = firing["LockwatchLongWriteLockHold"]
            assert long_hold["labels"]["db"] == os.path.realpath(tmp_path / "shop.sqlite3")
            assert float(long_hold["value"]) > HOLD_THRESHOLD
            busy = firing["LockwatchBusyErrors"]["labels"]
            assert busy["classification"] == "timeout"
            assert busy["db"] == os.path.realpath(tmp_path / "shop.sqlite3")
            assert hold.wait(30) == 0
            # Once the lock is let go the gauge falls to 0 and the hold alert resolves.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                names = {a["labels"]["alertname"] for a in _alerts(port)}
                if "LockwatchLongWriteLockHold" not in names:
                    break
                time.sleep(0.25)
            assert "LockwatchLongWriteLockHold" not in names
        finally:
            if hold is not None and hold.poll() is None:
                hold.kill()
                hold.wait(10)
            prom.terminate()
            try:
                prom.wait(20)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait(10)
            log.close()
