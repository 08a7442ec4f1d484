"""Prometheus metrics from the store: ``GET /metrics`` under ``lockwatch serve``.

The figures are read from the store at scrape time (a ``prometheus_client``
Collector), so one scrape sees every process that writes to it, and from the
holder table beside it for the lock held right now.

Counters and retention: the store forgets its oldest events (``RETENTION_MAX_ROWS``,
``RETENTION_MAX_AGE``), so a count of what it holds goes down. The collector keeps
running totals instead: its first scrape counts everything the store holds (holds
from the hourly rollup, which is kept exact in the events' own transactions), and
each later scrape adds the events stored since, by id (ids are given under the
store's write lock, in commit order, and never reused while any event is kept).
A pruned event has been counted already, so the counters never go down while the
server runs. ``lockwatch serve`` keeps the totals in its state directory
(``metrics-<hash>.json``, written after each scrape that saw something new) and a
restart goes on from them, counting what was stored meanwhile that retention has
not removed yet. When the store is replaced or emptied and its ids start again,
the totals start again from what it holds: Prometheus reads that as a counter
reset. The health counters come from the store's
``processes`` table, one row per process, never pruned: sums of per-process
counters that only grow.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from lockwatch import events, holders, holderview, store
from lockwatch.store import reading, rollup

log = logging.getLogger("lockwatch.metrics")

# Bucket bounds in seconds: the rollup's 1-2-5 edges (10 µs to 500 s). As in
# the rollup, a bin holds the values from its lower edge up to, not including, its
# upper one: a value exactly on an edge counts in the bucket above it.
BOUNDS = tuple(edge / 1000.0 for edge in rollup.EDGES)
# Databases named on the held-now gauge: the store names at most this many.
MAX_DBS = 100
UNKNOWN_DB = "unknown"  # a holder on a database the store has no hold of yet

_WAIT_BIN = rollup.bin_case("wait_ms")
_HOLD_BIN = rollup.bin_case("hold_ms")
_HOLDS = f"{events.HOLD} AND ts >= 0"
# The first scrape: everything the store holds. Each query repeats rollup.WAITS so
# SQLite reads it from the partial index that covers waits and busy errors.
_LOAD_BUSY = (
    f"SELECT classification, db, count(*) FROM events WHERE {rollup.WAITS}"
    " AND kind = 'busy' GROUP BY 1, 2"
)
_LOAD_WAITS = (
    f"SELECT outcome, {_WAIT_BIN}, count(*), sum(wait_ms) FROM events WHERE {rollup.WAITS}"
    " AND kind = 'wait' AND wait_ms IS NOT NULL GROUP BY 1, 2"
)
_LOAD_HOLDS = (
    f"SELECT bin, sum(n), sum(total_ms) FROM rollup WHERE span = {rollup.HOUR}"
    f" AND series IN ('{rollup.TXN}', '{rollup.WRITE}') GROUP BY bin"
)
# Each later scrape: the events stored since, by their ids: a range of the rowid
# (NOT INDEXED: otherwise SQLite reads every wait and busy error by the kind indexes).
_TAIL = (
    "SELECT kind, classification, outcome, CASE kind WHEN 'busy' THEN db END,"
    f" CASE kind WHEN 'busy' THEN 0 WHEN 'wait' THEN {_WAIT_BIN} ELSE {_HOLD_BIN} END,"
    " count(*), sum(CASE kind WHEN 'wait' THEN wait_ms ELSE hold_ms END)"
    " FROM events NOT INDEXED WHERE id > ? AND id <= ?"
    f" AND (kind = 'busy' OR (kind = 'wait' AND wait_ms IS NOT NULL) OR ({_HOLDS}))"
    " GROUP BY 1, 2, 3, 4, 5"
)
# The quiet writes stored since (lockwatch.pipeline.quiet): not events, rows of their own.
_TAIL_QUIET = (
    "SELECT bin, site, sum(n), sum(total_ms) FROM quiet WHERE id > ? AND id <= ?"
    f" AND series IN ('{rollup.TXN}', '{rollup.WRITE}') GROUP BY 1, 2"
)
# With --metrics-call-sites: busy errors by the call site that suffered them, and hold
# time by the call site that took the lock (the rollup's site key).
_LOAD_SITE_BUSY = (
    f"SELECT call_site, count(*) FROM events WHERE {rollup.WAITS} AND kind = 'busy' GROUP BY 1"
)
_LOAD_SITE_HOLDS = (
    f"SELECT site, sum(total_ms) FROM rollup WHERE span = {rollup.HOUR}"
    f" AND series IN ('{rollup.TXN}', '{rollup.WRITE}') GROUP BY site"
)
_TAIL_SITES = (
    "SELECT kind = 'busy', CASE kind WHEN 'busy' THEN COALESCE(call_site, '')"
    " ELSE COALESCE(lock_call_site, call_site, '') END, count(*), sum(hold_ms)"
    f" FROM events NOT INDEXED WHERE id > ? AND id <= ? AND (kind = 'busy' OR ({_HOLDS}))"
    " GROUP BY 1, 2"
)
# Call sites whose totals are kept (the top N are shown): bounded, in memory and on disk.
MAX_SITES = 10_000
_HEALTH = (
    "SELECT COALESCE(program, ''), sum(COALESCE(stored, 0)), sum(COALESCE(dropped, 0)),"
    " sum(COALESCE(lost, 0)) FROM processes GROUP BY 1"
)


class Hist:
    """Counts per rollup bin and the total, in ms."""

    def __init__(self) -> None:
        self.n = [0] * rollup.BINS
        self.total_ms = 0.0

    def add(self, bin: int, n: int, total_ms: float | None) -> None:
        self.n[bin] += n
        self.total_ms += total_ms or 0.0

    def as_json(self) -> list[Any]:
        return [self.n, self.total_ms]

    @classmethod
    def of(cls, data: Any) -> Hist:
        n, total = data
        if len(n) != rollup.BINS:
            raise ValueError("other bins")
        hist = cls()
        hist.n, hist.total_ms = [int(x) for x in n], float(total)
        return hist

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs, +Inf last, as Prometheus wants them."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(BOUNDS, self.n, strict=False):
            running += n
            out.append((_le(bound), running))
        out.append(("+Inf", running + self.n[-1]))
        return out


def _le(bound: float) -> str:
    text = repr(bound)
    return text[:-2] if text.endswith(".0") else text


class StoreCollector(Collector):
    """The store's figures at scrape time; see the module docstring for the counters."""

    # What a scrape changes (put back when it fails half-way).
    _STATE = (
        "last_id", "last_ts", "last_quiet", "busy", "waits", "holds", "dbs", "site_busy",
        "site_hold_ms",
    )  # fmt: skip

    def __init__(self, path: Path, state: Path | None = None, call_sites: int = 0) -> None:
        self.path = Path(path)
        self.state = state  # where the totals are kept across restarts (None: nowhere)
        self.call_sites = call_sites  # how many call sites to show (0: no call-site label)
        self._lock = threading.Lock()
        self._warned = False
        self._reset()
        self._restore()

    def _reset(self) -> None:
        self.last_id: int | None = None  # None: nothing read yet
        self.last_ts: float | None = None
        self.last_quiet = 0  # the quiet writes' rows read so far, by id
        self.busy: dict[tuple[str, str], int] = {}
        self.waits: dict[str, Hist] = {}
        self.holds = Hist()
        self.dbs: set[str] = set()
        self.site_busy: dict[str, int] = {}
        self.site_hold_ms: dict[str, float] = {}

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not read the store

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._families()

    # -- reading the store ------------------------------------------------------------

    def _families(self) -> list[Metric]:
        health: list[tuple[str, int, int, int]] = []
        readable = 1
        try:
            conn = reading.open_store(self.path)
        except store.StoreError as exc:
            readable = 0
            log.debug("lockwatch metrics: %s", exc)
        else:
            before = copy.deepcopy({name: getattr(self, name) for name in self._STATE})
            try:
                health = self._read(conn)
                if (self.last_id, self.last_ts, self.last_quiet, self.dbs) != (
                    before["last_id"],
                    before["last_ts"],
                    before["last_quiet"],
                    before["dbs"],
                ):
                    self._save()
            except sqlite3.DatabaseError as exc:
                # Nothing half-counted: the next scrape reads the same events again.
                self._restore_from(before)
                readable = 0
                log.warning("lockwatch metrics: the store %s cannot be read: %s", self.path, exc)
            finally:
                conn.close()
        up = GaugeMetricFamily(
            "lockwatch_store_readable",
            "1 when this scrape read the store, 0 when it could not (missing or unreadable)",
            value=readable,
        )
        return [up, *self._counters(health), self._held_now()]

    def _read(self, conn: sqlite3.Connection) -> list[tuple[str, int, int, int]]:
        conn.execute("BEGIN")  # one snapshot for every query below
        try:
            (top,) = conn.execute("SELECT COALESCE(max(id), 0) FROM events").fetchone()
            if self.last_id is not None and self._ids_restarted(conn):
                log.info("lockwatch metrics: the store's ids started again; totals too")
                self._reset()
            quiet = 0
            if rollup.quiet_available(conn):
                (quiet,) = conn.execute("SELECT COALESCE(max(id), 0) FROM quiet").fetchone()
            if self.last_id is None:
                self._load(conn)  # the rollup holds the quiet writes too
            else:
                if top > self.last_id:
                    self._tail(conn, self.last_id, top)
                if quiet > self.last_quiet:
                    self._tail_quiet(conn, self.last_quiet, quiet)
            self.last_id, self.last_quiet = top, quiet
            row = conn.execute("SELECT ts FROM events WHERE id = ?", (top,)).fetchone()
            self.last_ts = row[0] if row else None
            self._hold_dbs(conn)
            return [tuple(r) for r in conn.execute(_HEALTH)]
        finally:
            conn.execute("COMMIT")

    def _restore_from(self, before: dict[str, Any]) -> None:
        for name, value in before.items():
            setattr(self, name, value)

    # -- the totals across restarts ------------------------------------------------------

    def _restore(self) -> None:
        """The totals a previous server kept for this store, if any (else a first load)."""
        if self.state is None:
            return
        try:
            data = json.loads(self.state.read_text())
            if data["version"] != 1 or data["store"] != str(self.path):
                return
            last_id, last_ts = int(data["last_id"]), data["last_ts"]
            last_quiet = int(data.get("last_quiet", 0))  # kept before quiet writes: none
            busy = {(str(c), str(db)): int(n) for c, db, n in data["busy"]}
            waits = {str(o): Hist.of(h) for o, h in data["waits"].items()}
            holds = Hist.of(data["holds"])
            dbs = {str(db) for db in data["dbs"][:MAX_DBS]}
            if self.call_sites and data.get("sites") is None:
                return  # kept without call sites: count them from the store
            sites = data.get("sites") or [{}, {}]
            site_busy = {str(k): int(v) for k, v in sites[0].items()}
            site_hold_ms = {str(k): float(v) for k, v in sites[1].items()}
            if last_ts is not None:
                last_ts = float(last_ts)
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "lockwatch metrics: ignoring %s (%s); counting from the store", self.state, exc
            )
            return
        self.last_id, self.last_ts, self.last_quiet = last_id, last_ts, last_quiet
        self.busy, self.waits, self.holds, self.dbs = busy, waits, holds, dbs
        self.site_busy, self.site_hold_ms = site_busy, site_hold_ms

    def _save(self) -> None:
        if self.state is None or self.last_id is None:
            return
        data = {
            "version": 1, "store": str(self.path), "last_id": self.last_id,
            "last_ts": self.last_ts, "last_quiet": self.last_quiet,
            "busy": [[c, db, n] for (c, db), n in self.busy.items()],
            "waits": {o: h.as_json() for o, h in self.waits.items()},
            "holds": self.holds.as_json(), "dbs": sorted(self.dbs),
            "sites": [self.site_busy, self.site_hold_ms] if self.call_sites else None,
        }  # fmt: skip
        temporary = self.state.with_name(f".{self.state.name}.{os.getpid()}")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(data))
            os.replace(temporary, self.state)  # whole, for a server that starts meanwhile
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("lockwatch metrics: cannot keep the totals in %s: %s", self.state, exc)

    def _ids_restarted(self, conn: sqlite3.Connection) -> bool:
        """Whether the ids seen so far now name other events (an emptied or new store)."""
        if not self.last_id:
            return False
        row = conn.execute("SELECT ts FROM events WHERE id = ?", (self.last_id,)).fetchone()
        if row is not None:
            changed: bool = row[0] != self.last_ts
            return changed
        # Pruning deletes the oldest first: once the last seen id is gone, so is every
        # id below it, unless ids were given again from 1.
        (lowest,) = conn.execute("SELECT min(id) FROM events").fetchone()
        return lowest is not None and lowest <= self.last_id

    def _load(self, conn: sqlite3.Connection) -> None:
        for classification, db, n in conn.execute(_LOAD_BUSY):
            self._add_busy(classification, db, n)
        for outcome, bin, n, total in conn.execute(_LOAD_WAITS):
            self.waits.setdefault(outcome or "", Hist()).add(bin, n, total)
        for bin, n, total in conn.execute(_LOAD_HOLDS):
            self.holds.add(bin, n, total)
        if self.call_sites:
            for site, n in conn.execute(_LOAD_SITE_BUSY):
                self._add_site(self.site_busy, site, n)
            for site, total in conn.execute(_LOAD_SITE_HOLDS):
                self._add_site(self.site_hold_ms, site, total)

    def _tail(self, conn: sqlite3.Connection, after: int, upto: int) -> None:
        for kind, classification, outcome, db, bin, n, total in conn.execute(_TAIL, (after, upto)):
            if kind == "busy":
                self._add_busy(classification, db, n)
            elif kind == "wait":
                self.waits.setdefault(outcome or "", Hist()).add(bin, n, total)
            else:
                self.holds.add(bin, n, total)
        if self.call_sites:
            for busy, site, n, total in conn.execute(_TAIL_SITES, (after, upto)):
                if busy:
                    self._add_site(self.site_busy, site, n)
                else:
                    self._add_site(self.site_hold_ms, site, total or 0.0)

    def _tail_quiet(self, conn: sqlite3.Connection, after: int, upto: int) -> None:
        for bin, site, n, total in conn.execute(_TAIL_QUIET, (after, upto)):
            self.holds.add(bin, n, total)
            if self.call_sites:
                self._add_site(self.site_hold_ms, site, total or 0.0)

    @staticmethod
    def _add_site(totals: dict[str, Any], site: str | None, value: float) -> None:
        site = site or ""
        if site in totals or len(totals) < MAX_SITES:
            totals[site] = totals.get(site, 0) + value

    def _add_busy(self, classification: str | None, db: str | None, n: int) -> None:
        key = (classification or "", db or "")
        self.busy[key] = self.busy.get(key, 0) + n
        if db:
            self.dbs.add(db)

    def _hold_dbs(self, conn: sqlite3.Connection) -> None:
        """The databases the store has holds of: one probe of the (db, lock_ts) index each."""
        db = conn.execute("SELECT min(db) FROM holds").fetchone()[0]
        while db is not None and len(self.dbs) < MAX_DBS:
            self.dbs.add(db)
            db = conn.execute("SELECT min(db) FROM holds WHERE db > ?", (db,)).fetchone()[0]

    # -- the families -----------------------------------------------------------------

    def _counters(self, health: list[tuple[str, int, int, int]]) -> list[Metric]:
        busy = CounterMetricFamily(
            "lockwatch_busy_errors",
            "Busy errors ('database is locked') stored, by classification and database",
            labels=["classification", "db"],
        )
        # Every classification of every known database, 0 until it happens: a series
        # that appears at its first error hides that error from increase() and rate().
        counts = {(c, db): 0 for db in self.dbs for c in events.CLASSIFICATIONS}
        counts.update(self.busy)
        for (classification, db), n in sorted(counts.items()):
            busy.add_metric([classification, db], n)
        waits = HistogramMetricFamily(
            "lockwatch_lock_wait_seconds",
            "Lock waits stored: seconds each statement waited for a lock, by outcome",
            labels=["outcome"],
        )
        for outcome in events.WAIT_OUTCOMES:
            self.waits.setdefault(outcome, Hist())
        for outcome, hist in sorted(self.waits.items()):
            waits.add_metric([outcome], hist.buckets(), hist.total_ms / 1000.0)
        holds = HistogramMetricFamily(
            "lockwatch_write_lock_hold_seconds",
            "Write-lock holds stored (transactions and autocommit writes): seconds held",
        )
        holds.add_metric([], self.holds.buckets(), self.holds.total_ms / 1000.0)
        stored = CounterMetricFamily(
            "lockwatch_events_stored",
            "Records (events and hold rows) lockwatch's processes stored, by program",
            labels=["program"],
        )
        dropped = CounterMetricFamily(
            "lockwatch_events_dropped",
            "Events lockwatch's processes dropped (a full buffer), by program",
            labels=["program"],
        )
        lost = CounterMetricFamily(
            "lockwatch_events_lost",
            "Records lockwatch's processes could not store (store errors, killed"
            " processes' unflushed events), by program",
            labels=["program"],
        )
        for program, n_stored, n_dropped, n_lost in health:
            stored.add_metric([program], n_stored)
            dropped.add_metric([program], n_dropped)
            lost.add_metric([program], n_lost)
        out = [busy, waits, holds, stored, dropped, lost]
        if self.call_sites:
            site_busy = CounterMetricFamily(
                "lockwatch_call_site_busy_errors",
                f"Busy errors stored, by the call site that got them (the top {self.call_sites})",
                labels=["call_site"],
            )
            for site, n in top(self.site_busy, self.call_sites):
                site_busy.add_metric([site], n)
            site_hold = CounterMetricFamily(
                "lockwatch_call_site_hold_seconds",
                "Write-lock hold time stored, by the call site that took the lock"
                f" (the top {self.call_sites})",
                labels=["call_site"],
            )
            for site, ms in top(self.site_hold_ms, self.call_sites):
                site_hold.add_metric([site], ms / 1000.0)
            out += [site_busy, site_hold]
        return out

    def _held_now(self) -> Metric:
        held = GaugeMetricFamily(
            "lockwatch_write_lock_held_seconds",
            "Seconds the current holder of each database's write lock has held it (0: none)",
            labels=["db"],
        )
        ages = {db: 0.0 for db in sorted(self.dbs)}
        names = {holders.db_key(db): db for db in self.dbs}
        try:
            # Read-only, and only a table that exists: a reader never creates it.
            now = holderview.held_now(self.path)
        except Exception:  # the scrape must answer whatever the table holds
            log.exception("lockwatch metrics: cannot read the holder table")
            now = []
        for x in now:
            if not x.abandoned:  # its process is gone, and SQLite let go of its lock
                db = names.get(x.db_key, UNKNOWN_DB)
                ages[db] = max(ages.get(db, 0.0), x.age)
        for db, age in ages.items():
            held.add_metric([db], age)
        return held


# -- the endpoint -----------------------------------------------------------------------

_registries: dict[str, CollectorRegistry] = {}
_registries_lock = threading.Lock()


def top(totals: dict[str, Any], n: int) -> list[tuple[str, Any]]:
    """The ``n`` largest totals, ties by name."""
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:n]


def state_file(state_dir: Path, path: Path) -> Path:
    """Where a server with this state directory keeps its totals for the store at ``path``."""
    digest = hashlib.blake2b(str(path).encode(), digest_size=8).hexdigest()
    return Path(state_dir) / f"metrics-{digest}.json"


def registry_for(
    path: Path, state_dir: Path | None = None, call_sites: int = 0
) -> CollectorRegistry:
    """One registry, with one collector, per store (its running totals live there)."""
    key = f"{path}\0{state_dir}\0{call_sites}"
    with _registries_lock:
        registry = _registries.get(key)
        if registry is None:
            registry = CollectorRegistry(auto_describe=False)
            state = None if state_dir is None else state_file(state_dir, path)
            registry.register(StoreCollector(path, state, call_sites))
            _registries[key] = registry
        return registry
