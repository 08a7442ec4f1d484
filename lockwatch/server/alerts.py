"""Alerts without Prometheus: ``LOCKWATCH["ALERTS"]``, evaluated by ``lockwatch serve``.

Three rules, each read where one look sees every process: busy errors in the last
minute and the p95 lock wait over a window come from the store, a write lock held
too long right now from the live holder table. An alert goes to the
``lockwatch.server.alerts`` logger and, when a webhook is set, to a queue that its own
thread POSTs from, with a bounded timeout: a webhook that is down or hangs delays
only the alerts behind it, never an evaluation or a dashboard request, and each
failure is counted (``lockwatch_alert_webhook_failures_total`` on ``/metrics``).
Each alert is sent at most once per ``COOLDOWN`` while its rule keeps firing (the
hold rule once per database).

The app's processes never evaluate anything: only ``lockwatch serve`` starts this.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from lockwatch import events, holders, holderview, store
from lockwatch.conf import Alerts
from lockwatch.store import reading, rollup

log = logging.getLogger("lockwatch.alerts")

RULES = ("busy", "hold", "wait")
BUSY_WINDOW = 60.0  # "per minute"
QUEUE_SIZE = 64  # alerts waiting for a slow webhook; past this they are dropped and counted
MAX_DBS = 100  # databases named from the store's holds (as /metrics names them)
_NO_URL = "no dashboard URL: set LOCKWATCH['ALERTS']['DASHBOARD_URL']"


@dataclass(frozen=True)
class Alert:
    rule: str  # busy, hold or wait
    key: str  # what its cooldown is per
    text: str  # what happened, who blocked and where, and the link
    fields: dict[str, Any]

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON: Slack's ``text``, and the same facts as fields."""
        return {"text": self.text, "lockwatch": {"rule": self.rule, **self.fields}}


@dataclass
class Counters:
    """What this server's alerts did, for /metrics."""

    fired: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    failed: int = 0  # the webhook refused, timed out, or its queue was full
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fire(self, rule: str) -> None:
        with self.lock:
            self.fired[rule] = self.fired.get(rule, 0) + 1

    def posted(self, ok: bool) -> int:
        """Count one POST (or a drop); the failures so far."""
        with self.lock:
            if ok:
                self.sent += 1
            else:
                self.failed += 1
            return self.failed


def _where(url: str) -> str:
    """A webhook named without its path (a Slack webhook's path is its secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…"


class Webhook:
    """POSTs alerts from its own thread, one at a time, each within ``timeout`` seconds."""

    def __init__(self, url: str, timeout: float, counters: Counters) -> None:
        self.url, self.timeout, self.counters = url, timeout, counters
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_SIZE)
        self._thread = threading.Thread(target=self._run, name="lockwatch-webhook", daemon=True)
        self._thread.start()

    def put(self, payload: dict[str, Any]) -> None:
        """Never blocks: a full queue (a webhook stuck for long) drops it, counted."""
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            failed = self.counters.posted(False)
            log.warning(
                "lockwatch alerts: the webhook %s is behind; an alert was dropped"
                " (%d failures so far)", _where(self.url), failed,
            )  # fmt: skip

    def close(self, timeout: float = 0.0) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            return  # a daemon thread: it ends with the process
        self._thread.join(timeout)

    def _run(self) -> None:
        while (payload := self._queue.get()) is not None:
            try:
                self.post(payload)
            except Exception as exc:  # a refusal, a timeout, a bad answer: counted, never raised
                log.warning(
                    "lockwatch alerts: the webhook %s failed: %s (%d failures so far)",
                    _where(self.url), exc, self.counters.posted(False),
                )  # fmt: skip
            else:
                self.counters.posted(True)

    def post(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        request = urllib.request.Request(
            self.url, data=body, method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "lockwatch-alerts"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            response.read(4096)  # urlopen raises HTTPError for a 4xx or 5xx


def _seconds(value: float) -> str:
    return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"


def _who(call_site: str | None, context: str | None, pid: int | None) -> str:
    about = ", ".join(x for x in (context, f"pid {pid}" if pid else None) if x)
    return f"{call_site or 'an unknown call site'}" + (f" ({about})" if about else "")


class Evaluator:
    """The rules, read from the store and the holder table beside it."""

    def __init__(
        self,
        path: Path,
        cfg: Alerts,
        dashboard: str | None = None,
        webhook: Webhook | None = None,
        counters: Counters | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self.cfg, self.webhook = Path(path), cfg, webhook
        self.base = (cfg.dashboard_url or dashboard or "").rstrip("/") or None
        self.counters = counters or Counters()
        self.clock = clock
        self._last: dict[str, float] = {}  # alert key -> when it was last sent
        self._warned = False

    def link(self, path: str = "/", **query: str) -> str | None:
        if self.base is None:
            return None
        return f"{self.base}{path}" + (f"?{urlencode(query)}" if query else "")

    # -- evaluation -------------------------------------------------------------------

    def step(self) -> list[Alert]:
        """Evaluate every rule once; send what fires and is out of its cooldown."""
        sent = []
        for alert in self.check():
            now = self.clock()
            last = self._last.get(alert.key)
            if last is not None and now - last < self.cfg.cooldown:
                continue
            self._last[alert.key] = now
            self.counters.fire(alert.rule)
            log.warning("%s", alert.text)
            if self.webhook is not None:
                self.webhook.put(alert.payload())
            sent.append(alert)
        return sent

    def check(self) -> list[Alert]:
        """The alerts whose rules fire now, cooldowns aside."""
        now = time.time()
        out: list[Alert] = []
        conn = None
        try:
            conn = reading.open_store(self.path)
            conn.execute("BEGIN")  # one snapshot for every rule
            if self.cfg.busy_per_minute is not None:
                out += self._busy(conn, now)
            if self.cfg.wait_p95_seconds is not None:
                out += self._waits(conn, now)
            self._warned = False
        except (store.StoreError, sqlite3.DatabaseError) as exc:
            if not self._warned:  # once until it can read again
                self._warned = True
                log.warning("lockwatch alerts: the store %s cannot be read: %s", self.path, exc)
        if self.cfg.hold_seconds is not None:
            out += self._holds(conn)
        if conn is not None:
            conn.close()
        return out

    def _busy(self, conn: sqlite3.Connection, now: float) -> list[Alert]:
        since = now - BUSY_WINDOW
        where = f"{rollup.WAITS} AND kind = 'busy' AND ts >= ?"
        by_class = conn.execute(
            f"SELECT classification, count(*), max(id) FROM events WHERE {where}"
            " GROUP BY 1 ORDER BY 2 DESC, 1",
            (since,),
        ).fetchall()
        n = sum(row[1] for row in by_class)
        threshold = self.cfg.busy_per_minute
        assert threshold is not None
        if n <= threshold:
            return []
        latest = max(row[2] for row in by_class)
        site, context, n_site = conn.execute(
            f"SELECT call_site, context, count(*) FROM events WHERE {where}"
            " GROUP BY 1, 2 ORDER BY 3 DESC, max(id) DESC LIMIT 1",
            (since,),
        ).fetchone()
        blocker, b_context, b_pid, n_blocked = conn.execute(
            f"SELECT blocker_call_site, blocker_context, max(blocker_pid), count(*) FROM events"
            f" WHERE {where} GROUP BY 1, 2 ORDER BY 4 DESC, max(id) DESC LIMIT 1",
            (since,),
        ).fetchone()
        classes = {c or "other": k for c, k, _ in by_class}
        url = self.link(f"/events/{latest}/")
        text = (
            f"lockwatch: {n} busy error{'s' if n != 1 else ''} ('database is locked') in the"
            f" last minute (alert above {threshold}): "
            + ", ".join(f"{k} {c}" for c, k in classes.items())
            + f". {n_site} at {_who(site, context, None)}. Blocker: "
            + (
                f"{_who(blocker, b_context, b_pid)}, behind {n_blocked} of them."
                if blocker or b_context
                else "not named."
            )
            + f" Latest: {url or _NO_URL}"
        )
        fields = {
            "count": n, "threshold": threshold, "window_seconds": BUSY_WINDOW,
            "classifications": classes, "call_site": site, "context": context,
            "blocker_call_site": blocker, "blocker_context": b_context,
            "blocker_pid": b_pid, "blocked": n_blocked, "event_id": latest,
            "url": url, "list_url": self.link("/", since=events.iso(since), kind="busy"),
        }  # fmt: skip
        return [Alert("busy", "busy", text, fields)]

    def _waits(self, conn: sqlite3.Connection, now: float) -> list[Alert]:
        since = now - self.cfg.wait_window
        where = f"{rollup.WAITS} AND kind = 'wait' AND ts >= ? AND wait_ms IS NOT NULL"
        n, gave_up = conn.execute(
            f"SELECT count(*), count(CASE outcome WHEN 'gave_up' THEN 1 END) FROM events"
            f" WHERE {where}",
            (since,),
        ).fetchone()
        if not n:
            return []
        (p95_ms,) = conn.execute(
            f"SELECT wait_ms FROM events WHERE {where} ORDER BY wait_ms LIMIT 1 OFFSET ?",
            (since, rollup.nearest_rank(n, 95) - 1),
        ).fetchone()
        threshold = self.cfg.wait_p95_seconds
        assert threshold is not None
        if p95_ms / 1000.0 <= threshold:
            return []
        blocker, b_context, b_pid, n_behind, behind_ms = conn.execute(
            f"SELECT blocker_call_site, blocker_context, max(blocker_pid), count(*),"
            f" sum(wait_ms) FROM events WHERE {where} GROUP BY 1, 2 ORDER BY 5 DESC LIMIT 1",
            (since,),
        ).fetchone()
        url = self.link("/", since=events.iso(since), kind="wait")
        window = _seconds(self.cfg.wait_window)
        text = (
            f"lockwatch: p95 lock wait {_seconds(p95_ms / 1000.0)} over the last {window}"
            f" (alert above {_seconds(threshold)}): {n} wait{'s' if n != 1 else ''}"
            f", {gave_up} gave up. Most of the waiting was behind "
            + (
                f"{_who(blocker, b_context, b_pid)}: {n_behind} waits,"
                f" {_seconds(behind_ms / 1000.0)}."
                if blocker or b_context
                else "an unnamed blocker."
            )
            + f" Dashboard: {url or _NO_URL}"
        )
        fields = {
            "p95_seconds": p95_ms / 1000.0, "threshold": threshold,
            "window_seconds": self.cfg.wait_window, "count": n, "gave_up": gave_up,
            "blocker_call_site": blocker, "blocker_context": b_context,
            "blocker_pid": b_pid, "behind": n_behind, "behind_seconds": behind_ms / 1000.0,
            "url": url,
        }  # fmt: skip
        return [Alert("wait", "wait", text, fields)]

    def _holds(self, conn: sqlite3.Connection | None) -> list[Alert]:
        threshold = self.cfg.hold_seconds
        assert threshold is not None
        try:
            now = holderview.held_now(self.path)  # read-only; never creates the table
        except Exception:  # a damaged table must not stop the other rules
            log.exception("lockwatch alerts: cannot read the holder table")
            return []
        long = [x for x in now if not x.abandoned and x.age > threshold]
        if not long:
            return []
        names = self._db_names(conn)
        out, seen = [], set()
        for x in long:  # the longest first: one alert per database
            if x.db_key in seen:
                continue
            seen.add(x.db_key)
            h = x.holder
            db = names.get(x.db_key)
            state = "" if x.state == "holding" else f" ({x.state})"
            sql = f": {h.sql}" if h.sql else ""
            url = self.link("/", window="5m")
            text = (
                f"lockwatch: the write lock on {db or 'a database'} has been held for"
                f" {_seconds(x.age)} (alert above {_seconds(threshold)}) and still is{state},"
                f" by {_who(h.call_site, h.context, h.pid)}, thread {h.thread or '?'}{sql}."
                f" Every other writer waits meanwhile. Dashboard: {url or _NO_URL}"
            )
            fields = {
                "db": db, "held_seconds": x.age, "threshold": threshold,
                "state": x.state, "pid": h.pid, "call_site": h.call_site,
                "context": h.context, "thread": h.thread, "sql": h.sql,
                "url": url,
            }  # fmt: skip
            out.append(Alert("hold", f"hold:{x.db_key}", text, fields))
        return out

    @staticmethod
    def _db_names(conn: sqlite3.Connection | None) -> dict[int, str]:
        """The databases the store has holds of, by their key in the holder table."""
        names: dict[int, str] = {}
        if conn is None:
            return names
        try:
            db = conn.execute("SELECT min(db) FROM holds").fetchone()[0]
            while db is not None and len(names) < MAX_DBS:
                names[holders.db_key(db)] = db
                db = conn.execute("SELECT min(db) FROM holds WHERE db > ?", (db,)).fetchone()[0]
        except sqlite3.DatabaseError:
            pass  # named "a database" instead
        return names

    def run(self, stop: threading.Event) -> None:
        """Evaluate every ``INTERVAL`` until ``stop`` is set; nothing it meets escapes."""
        while True:
            try:
                self.step()
            except Exception:
                log.exception("lockwatch alerts: an evaluation failed")
            if stop.wait(self.cfg.interval):
                return


# -- lockwatch serve -----------------------------------------------------------------------

COUNTERS = Counters()
_running: list[tuple[Evaluator, threading.Event]] = []


def describe(cfg: Alerts) -> str:
    rules = [
        f"more than {cfg.busy_per_minute} busy errors a minute"
        if cfg.busy_per_minute is not None else "",
        f"a write lock held over {_seconds(cfg.hold_seconds)}"
        if cfg.hold_seconds is not None else "",
        f"p95 lock wait over {_seconds(cfg.wait_p95_seconds)} in {_seconds(cfg.wait_window)}"
        if cfg.wait_p95_seconds is not None else "",
    ]  # fmt: skip
    return "; ".join(r for r in rules if r) or "no rules"


def start(path: Path, cfg: Alerts, dashboard: str | None) -> Evaluator:
    """Evaluate ``cfg`` on its own thread until the process ends (``lockwatch serve``)."""
    webhook = None if cfg.webhook is None else Webhook(cfg.webhook, cfg.timeout, COUNTERS)
    evaluator = Evaluator(path, cfg, dashboard, webhook, COUNTERS)
    stop = threading.Event()
    thread = threading.Thread(
        target=evaluator.run, args=(stop,), name="lockwatch-alerts", daemon=True
    )
    _running.append((evaluator, stop))
    thread.start()
    log.info(
        "lockwatch alerts: %s, every %s, each at most once per %s; to %s; links to %s",
        describe(cfg), _seconds(cfg.interval), _seconds(cfg.cooldown),
        f"the log and {_where(cfg.webhook)}" if cfg.webhook else "the log only (no WEBHOOK)",
        evaluator.base or "nowhere (no DASHBOARD_URL)",
    )  # fmt: skip
    return evaluator


class _Collector(Collector):
    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        with COUNTERS.lock:
            fired, sent, failed = dict(COUNTERS.fired), COUNTERS.sent, COUNTERS.failed
        alerts = CounterMetricFamily(
            "lockwatch_alerts", "Alerts this lockwatch serve raised, by rule", labels=["rule"]
        )
        for rule in RULES:
            alerts.add_metric([rule], fired.get(rule, 0))
        yield alerts
        yield CounterMetricFamily(
            "lockwatch_alert_webhook_sent", "Alerts the webhook accepted", value=sent
        )
        yield CounterMetricFamily(
            "lockwatch_alert_webhook_failures",
            "Alerts the webhook refused or did not answer in time, or dropped behind a stuck one",
            value=failed,
        )


_registry = CollectorRegistry(auto_describe=False)
_registry.register(_Collector())


def exposition() -> bytes:
    """The alert counters in Prometheus's text format; empty when no alerts run here."""
    return generate_latest(_registry) if _running else b""
