"""LOCKWATCH["ALERTS"]: rules evaluated by `lockwatch serve`, posted to a real webhook.

The webhook is a real HTTP server on a free port (http.server in a thread); a dead one
is a port nothing listens on, a hanging one accepts connections and never answers.
The long hold is a real instrumented process holding BEGIN IMMEDIATE on a real file.
Timing bounds are one-sided and loose: a loaded 2-core machine passes them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.test import override_settings

from lockwatch import conf, events, store
from lockwatch.server import alerts
from tests.conftest import ROOT, free_port, line_of
from tests.support.servers import child_env

MANAGE = ROOT / "tests" / "project" / "manage.py"
COMMANDS = ROOT / "tests" / "project" / "shop" / "management" / "commands"
TOKEN = "alerts-test-token-7c2d"
HOLDER_SITE = (
    "tests/project/shop/management/commands/hold_lock.py:"
    f"{line_of(COMMANDS / 'hold_lock.py', 'with transaction.atomic()')} in handle"
)


class Hook:
    """A real webhook: records each POST's JSON body and when it came."""

    def __init__(self) -> None:
        self.posts: list[tuple[float, dict[str, Any]]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((time.monotonic(), json.loads(body)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-path"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.posts) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return [body for _, body in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Hanging:
    """Accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.sock.accept()[0])

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    h = Hanging()
    yield h
    h.close()


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: connection refused


def busy_store(path: Path, n: int = 3, ts: float | None = None) -> None:
    """n busy errors just now, behind a named blocker in another process."""
    now = time.time() if ts is None else ts
    busy = dict(
        kind="busy", classification="timeout", wait_ms=5000.0, pid=7, conn_id=1,
        db="/srv/app/db.sqlite3", call_site="shop/views.py:18 in checkout",
        context="request:POST /checkout/", blocker_pid=42,
        blocker_call_site="shop/tasks.py:40 in restock", blocker_context="command:restock",
    )  # fmt: skip
    rows = [events.row(ts=now - 0.01 * i, **busy) for i in range(n)]
    w = store.Writer(path)
    try:
        w.write(rows, [], [])
    finally:
        w.close()


def rules(**values: Any) -> conf.Alerts:
    alerts_cfg = conf.build({"ALERTS": values}).alerts
    assert alerts_cfg is not None
    return alerts_cfg


# -- settings --------------------------------------------------------------------------


def test_alerts_are_off_by_default_and_each_rule_defaults_to_the_prometheus_rules():
    assert conf.build({}).alerts is None
    a = rules()
    assert (a.webhook, a.busy_per_minute, a.hold_seconds, a.wait_p95_seconds) == (None, 0, 10, 1)
    assert (a.wait_window, a.cooldown) == (300, 600)
    assert rules(HOLD_SECONDS=None, DASHBOARD_URL="https://lw.example.com/").dashboard_url == (
        "https://lw.example.com"
    )


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("on", "LOCKWATCH['ALERTS'] must be None or a dict of alert rules, got 'on'"),
        ({"HOLD_SECOND": 5}, "LOCKWATCH['ALERTS'] has an unknown key 'HOLD_SECOND'"),
        ({"WEBHOOK": "file:///etc/passwd"}, "['WEBHOOK'] must be None or an http(s) URL"),
        ({"TIMEOUT": 600}, "['TIMEOUT'] must be a finite number from 0.1 to 60, got 600"),
        ({"BUSY_PER_MINUTE": 0.5}, "['BUSY_PER_MINUTE'] must be a whole number >= 0 or None"),
        ({"COOLDOWN": float("nan")}, "['COOLDOWN'] must be a finite number >= 0, got nan"),
    ],  # fmt: skip
)
def test_a_bad_alerts_value_is_a_named_system_check_error(value, named):
    with override_settings(LOCKWATCH={"ALERTS": value}):
        conf.reset()
        found = [m for m in checks.run_checks(tags=["lockwatch"]) if m.id == "lockwatch.E003"]
        assert conf.get_config().enabled is False  # as for any bad value: capture off, no raise
    conf.reset()
    assert len(found) == 1 and named in found[0].msg, [m.msg for m in found]


def test_serve_refuses_bad_alerts_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "lockwatch", "serve", "--store", str(tmp_path / "s.sqlite3")],
        env=child_env(LOCKWATCH_ALERTS='{"WEBHOOK": "ftp://x"}'), capture_output=True, text=True,
        timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "lockwatch serve: error: $LOCKWATCH_ALERTS: LOCKWATCH['ALERTS']['WEBHOOK'] must be"
        " None or an http(s) URL, got 'ftp://x'"
    )


# -- the rules and the webhook, in this process -----------------------------------------


def test_a_rule_that_keeps_firing_posts_once_per_cooldown(tmp_path, hook, caplog):
    path = tmp_path / "lockwatch.sqlite3"
    busy_store(path)
    cfg = rules(
        WEBHOOK=hook.url, DASHBOARD_URL="https://lw.example.com", COOLDOWN=1.0, INTERVAL=0.05
    )
    counters = alerts.Counters()
    webhook = alerts.Webhook(hook.url, cfg.timeout, counters)
    evaluator = alerts.Evaluator(path, cfg, None, webhook, counters)
    stop = threading.Event()
    thread = threading.Thread(target=evaluator.run, args=(stop,))
    caplog.set_level(logging.WARNING, "lockwatch.alerts")
    started = time.monotonic()
    thread.start()
    time.sleep(3.5)
    stop.set()
    thread.join(30)
    elapsed = time.monotonic() - started
    webhook.close(30)
    posts = [body for _, body in hook.posts]
    # Evaluated every 0.05 s for 3.5 s, the rule firing all along: once per second at most.
    assert 2 <= len(posts) <= elapsed / 1.0 + 1, len(posts)
    assert counters.fired == {"busy": len(posts)} and counters.sent == len(posts)
    assert counters.failed == 0
    body = posts[0]
    assert body["text"].startswith(
        "lockwatch: 3 busy errors ('database is locked') in the last minute (alert above 0):"
        " 3 timeout. 3 at shop/views.py:18 in checkout (request:POST /checkout/). Blocker:"
        " shop/tasks.py:40 in restock (command:restock, pid 42), behind 3 of them. Latest:"
        " https://lw.example.com/events/"
    ), body["text"]
    fields = body["lockwatch"]
    assert fields["rule"] == "busy" and fields["count"] == 3
    assert fields["blocker_call_site"] == "shop/tasks.py:40 in restock"
    assert fields["url"] == f"https://lw.example.com/events/{fields['event_id']}/"
    assert fields["list_url"].startswith("https://lw.example.com/?since=")
    logged = [r.getMessage() for r in caplog.records if r.name == "lockwatch.alerts"]
    assert logged.count(body["text"]) >= 1 and len(logged) == len(posts)


def test_no_alert_under_the_threshold_or_for_old_errors(tmp_path):
    path = tmp_path / "lockwatch.sqlite3"
    busy_store(path, n=3, ts=time.time() - 120)  # older than a minute
    busy_store(path, n=2)
    assert alerts.Evaluator(path, rules(BUSY_PER_MINUTE=2)).check() == []
    assert [a.fields["count"] for a in alerts.Evaluator(path, rules()).check()] == [2]


def test_p95_wait_over_the_window_names_the_blocker(tmp_path):
    path = tmp_path / "lockwatch.sqlite3"
    now = time.time()
    wait = dict(
        kind="wait", outcome="acquired", pid=7, conn_id=1, blocker_context="command:restock",
        blocker_pid=42,
    )  # fmt: skip
    rows = [
        events.row(ts=now - i, wait_ms=float(ms), blocker_call_site=site, **wait)
        for i, (ms, site) in enumerate(
            [(50, "a.py:1 in f")] * 18 + [(1500, "shop/tasks.py:40 in restock")] * 2
        )
    ]
    w = store.Writer(path)
    w.write(rows, [], [])
    w.close()
    # 20 waits: the 19th smallest is 1.5 s (nearest rank).
    (alert,) = alerts.Evaluator(path, rules(WAIT_P95_SECONDS=1.0)).check()
    assert alert.fields["p95_seconds"] == 1.5 and alert.fields["count"] == 20
    assert "Most of the waiting was behind shop/tasks.py:40 in restock (command:restock," in (
        alert.text
    )
    assert alert.text.endswith("no dashboard URL: set LOCKWATCH['ALERTS']['DASHBOARD_URL']")
    assert alerts.Evaluator(path, rules(WAIT_P95_SECONDS=1.5)).check() == []


@pytest.mark.parametrize("kind", ["dead", "hanging"])
def test_a_dead_or_hanging_webhook_costs_the_evaluation_nothing(tmp_path, hanging, kind):
    path = tmp_path / "lockwatch.sqlite3"
    busy_store(path)
    url = dead_url() if kind == "dead" else hanging.url
    cfg = rules(WEBHOOK=url, TIMEOUT=0.5, COOLDOWN=0)
    counters = alerts.Counters()
    webhook = alerts.Webhook(url, cfg.timeout, counters)
    evaluator = alerts.Evaluator(path, cfg, "http://127.0.0.1:8000", webhook, counters)
    took = []
    queued = time.monotonic()
    for _ in range(5):  # COOLDOWN=0: each one fires and queues a POST
        started = time.monotonic()
        assert len(evaluator.step()) == 1
        took.append(time.monotonic() - started)
    # The POSTs wait on the webhook's thread; an evaluation never waits for one.
    assert max(took) < cfg.timeout, took
    deadline = time.monotonic() + 60
    while counters.failed < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (counters.failed, counters.sent) == (5, 0)
    if kind == "hanging":  # each one waited out its timeout, one after another
        assert time.monotonic() - queued >= 5 * cfg.timeout - 0.1
    webhook.close(5)


def test_a_stuck_webhook_drops_alerts_past_its_queue_and_counts_them(
    tmp_path, hanging, monkeypatch
):
    monkeypatch.setattr(alerts, "QUEUE_SIZE", 2)
    counters = alerts.Counters()
    webhook = alerts.Webhook(hanging.url, 30, counters)
    started = time.monotonic()
    for _ in range(6):
        webhook.put({"text": "x"})  # one being posted, two queued, three dropped
    assert time.monotonic() - started < 5  # put never waits
    assert counters.failed >= 3 and counters.sent == 0


def test_the_hold_rule_without_a_store_reads_the_table_only(tmp_path):
    # No store and no holder table yet: nothing fires, nothing is created.
    path = tmp_path / "lockwatch.sqlite3"
    assert alerts.Evaluator(path, rules(HOLD_SECONDS=0)).check() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -- under a real `lockwatch serve` ------------------------------------------------------


@contextlib.contextmanager
def serving(tmp_path: Path, store_path: Path, *args: str, **env: str) -> Iterator[int]:
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "lockwatch", "serve", "--port", str(port), *args]
    environment = child_env(
        LOCKWATCH_TOKEN=TOKEN, LOCKWATCH_STATE_DIR=str(tmp_path / "state"),
        LOCKWATCH_STORE=str(store_path), **env,
    )  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def get(port: int, path: str = "/metrics") -> tuple[int, str, float]:
    started = time.monotonic()
    conn = HTTPConnection("127.0.0.1", port, timeout=30)
    scheme = "Bearer" if path == "/metrics" else "Token"  # the dashboard's own header
    try:
        conn.request("GET", path, headers={"Authorization": f"{scheme} {TOKEN}"})
        r = conn.getresponse()
        return r.status, r.read().decode(), time.monotonic() - started
    finally:
        conn.close()


def sample(body: str, name: str) -> float:
    (value,) = [line.split()[-1] for line in body.splitlines() if line.startswith(name + " ")]
    return float(value)


@pytest.mark.parametrize("kind", ["dead", "hanging"])
def test_serve_keeps_answering_while_its_webhook_is_dead_or_hangs(tmp_path, hanging, kind):
    store_path = tmp_path / "lockwatch.sqlite3"
    busy_store(store_path)
    url = dead_url() if kind == "dead" else hanging.url
    settings = {"WEBHOOK": url, "TIMEOUT": 2, "COOLDOWN": 0, "INTERVAL": 0.1}
    with serving(tmp_path, store_path, LOCKWATCH_ALERTS=json.dumps(settings)) as port:
        deadline = time.monotonic() + 60
        failures, slowest = 0.0, 0.0
        while failures < 2 and time.monotonic() < deadline:
            status, body, took = get(port)
            assert status == 200, body
            slowest = max(slowest, took)
            failures = sample(body, "lockwatch_alert_webhook_failures_total")
            time.sleep(0.05)
        assert failures >= 2
        assert sample(body, 'lockwatch_alerts_total{rule="busy"}') >= failures
        assert sample(body, "lockwatch_alert_webhook_sent_total") == 0
        # Every answer came while alerts queued behind the webhook: far under its 2 s.
        assert slowest < 2.0, slowest
        assert get(port, "/")[0] == 200  # the dashboard too
    log = (tmp_path / "serve.log").read_text()
    assert "lockwatch: 3 busy errors ('database is locked') in the last minute" in log
    assert "failures so far" in log
    assert "hooks/" not in log  # the webhook's path (a Slack webhook's secret) is not logged


def test_serve_alerts_on_a_real_long_hold_with_the_holders_call_site(tmp_path, hook):
    store_path = tmp_path / "lockwatch.sqlite3"
    db = tmp_path / "shop.sqlite3"
    project = child_env(
        LOCKWATCH_TEST_DB=str(db), LOCKWATCH_STORE=str(store_path),
        DJANGO_SETTINGS_MODULE="tests.project.settings", LOCKWATCH_TEST_MODE="IMMEDIATE",
    )  # fmt: skip
    subprocess.run(
        [sys.executable, str(MANAGE), "migrate", "-v0"], cwd=ROOT, env=project, check=True,
        timeout=120, capture_output=True,
    )  # fmt: skip
    # The project's settings as a user writes them, read by serve --settings.
    (tmp_path / "alerting_settings.py").write_text(
        f"LOCKWATCH = {{'STORE': {str(store_path)!r}, 'ALERTS': {{\n"
        f"    'WEBHOOK': {hook.url!r}, 'HOLD_SECONDS': 1, 'BUSY_PER_MINUTE': None,\n"
        "    'INTERVAL': 0.2, 'DASHBOARD_URL': 'https://lockwatch.example.com'}}\n"
    )
    pythonpath = f"{tmp_path}{os.pathsep}{ROOT}"
    with serving(
        tmp_path, tmp_path / "elsewhere.sqlite3", "--settings", "alerting_settings",
        PYTHONPATH=pythonpath,
    ) as port:  # fmt: skip
        ready = tmp_path / "ready"
        holder = subprocess.Popen(
            [sys.executable, str(MANAGE), "hold_lock", "--seconds", "30", "--ready-file",
             str(ready)], cwd=ROOT, env=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                assert holder.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            took = time.monotonic()
            posts = hook.wait(1, timeout=25)
            assert posts, (tmp_path / "serve.log").read_text()
            assert hook.posts[0][0] - took >= 1.0 - 0.3  # not before it was held for 1 s
            assert holder.poll() is None  # the alert came while the lock was held
            body = posts[0]
            fields = body["lockwatch"]
            assert fields["rule"] == "hold" and fields["pid"] == holder.pid
            assert fields["db"] == os.path.realpath(db)
            assert fields["call_site"] == HOLDER_SITE
            assert body["text"].startswith(
                f"lockwatch: the write lock on {os.path.realpath(db)} has been held for "
            ), body["text"]
            assert (
                f"(alert above 1 s) and still is, by {HOLDER_SITE} (command:hold_lock, pid"
                f" {holder.pid}), thread MainThread: BEGIN IMMEDIATE. Every other writer waits"
                " meanwhile. Dashboard: https://lockwatch.example.com/?window=5m"
            ) in body["text"]
            time.sleep(1.0)  # more evaluations, within the cooldown: no second POST
            assert len(hook.posts) == 1
            status, metrics_body, _ = get(port)
            assert sample(metrics_body, 'lockwatch_alerts_total{rule="hold"}') == 1
            assert sample(metrics_body, "lockwatch_alert_webhook_sent_total") == 1
        finally:
            holder.kill()
            holder.wait(10)
