"""The store's rollup agrees with its events, and long windows read it exactly.

Every expectation here is computed straight from the events table, in plain
Python, with its own binning (a count of edges), never through lockwatch.store.rollup.
"""

from __future__ import annotations

import math
import random
import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lockwatch import doctor, events, store
from lockwatch.dashboard import queries
from lockwatch.store import rollup

EDGES = rollup.EDGES
SITES = ["shop/views.py:10 in checkout", "shop/tasks.py:7 in sync", "", None]


def ref_bin(value: float) -> int:
    return sum(1 for edge in EDGES if edge <= value)


def hold_site(row: dict[str, Any]) -> str:
    """COALESCE(lock_call_site, call_site, ''): an empty string is a value, not None."""
    site = row["lock_call_site"] if row["lock_call_site"] is not None else row["call_site"]
    return "" if site is None else site


def ref_series(row: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(series, site, value) for each series the event counts in."""
    out = []
    site = hold_site(row)
    if row["kind"] in ("transaction", "query") and row["hold_ms"] is not None:
        out.append(("txn" if row["kind"] == "transaction" else "write", site, row["hold_ms"]))
    if row["kind"] == "transaction" and row["duration_ms"] is not None:
        out.append(("duration", "", row["duration_ms"]))
    return out


def all_events(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    cur = conn.cursor()
    cur.row_factory = sqlite3.Row
    return [dict(r) for r in cur.execute("SELECT * FROM events")]


def ref_table(conn: sqlite3.Connection) -> dict[tuple, list]:
    """What the rollup table must hold: (span, bucket, series, site, bin) -> [n, total]."""
    out: dict[tuple, list] = defaultdict(lambda: [0, 0.0])
    for row in all_events(conn):
        for series, site, value in ref_series(row):
            for span in (60, 3600):
                cell = out[span, math.floor(row["ts"]) // span, series, site, ref_bin(value)]
                cell[0] += 1
                cell[1] += value
    return dict(out)


def stored_table(conn: sqlite3.Connection) -> dict[tuple, list]:
    return {
        tuple(r[:5]): [r[5], r[6]]
        for r in conn.execute(
            "SELECT span, bucket, series, site, bin, n, total_ms FROM rollup"
        ).fetchall()
    }


def assert_rollup_agrees(conn: sqlite3.Connection) -> None:
    expected, stored = ref_table(conn), stored_table(conn)
    assert {k: v[0] for k, v in stored.items()} == {k: v[0] for k, v in expected.items()}
    for key, (_, total) in expected.items():
        assert stored[key][1] == pytest.approx(total, rel=1e-9, abs=1e-6), key


def ref_window(
    conn: sqlite3.Connection, since: float, until: float
) -> dict[tuple[str, str], tuple[list[int], list[float]]]:
    out: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    for row in all_events(conn):
        if not since <= row["ts"] <= until:
            continue
        for series, site, value in ref_series(row):
            n, total = out.setdefault((series, site), ([0] * rollup.BINS, [0.0] * rollup.BINS))
            n[ref_bin(value)] += 1
            total[ref_bin(value)] += value
    return out


def random_value(rng: random.Random) -> float | None:
    edge = rng.choice(EDGES)
    return rng.choice(
        [None, 0.0, round(rng.lognormvariate(1.0, 3.0), 3), edge, math.nextafter(edge, 0.0)]
    )


def random_rows(rng: random.Random, start: float, end: float, n: int) -> list[dict[str, Any]]:
    first, last = math.ceil(start / 60), math.floor(end / 60)
    rows = []
    for _ in range(n):
        minute = 60.0 * rng.randint(first, last)
        # Events on and just before minute boundaries, where a bucket could slip.
        ts = rng.choice([rng.uniform(start, end), minute, math.nextafter(minute, 0.0)])
        kind = rng.choice(["transaction", "transaction", "query", "query", "wait", "request"])
        common = dict(kind=kind, ts=ts, pid=rng.randint(1, 3), call_site=rng.choice(SITES))
        if kind == "transaction":
            rows.append(
                events.row(
                    hold_ms=random_value(rng),
                    duration_ms=random_value(rng),
                    lock_call_site=rng.choice(SITES),
                    **common,
                )
            )
        elif kind == "query":
            rows.append(events.row(hold_ms=random_value(rng), duration_ms=1.0, **common))
        elif kind == "wait":
            wait = random_value(rng)
            rows.append(events.row(wait_ms=wait, duration_ms=wait, outcome="acquired", **common))
        else:
            rows.append(events.row(duration_ms=random_value(rng), **common))
    return rows


def writer_with(path: Path, rows: list[dict[str, Any]]) -> store.Writer:
    writer = store.Writer(path)
    for i in range(0, len(rows), 97):  # several batches, as the flusher writes them
        writer.write(rows[i : i + 97], [], [])
    return writer


# -- one definition of the bins ----------------------------------------------------


def test_sql_and_python_bins_agree_at_and_around_every_edge():
    values: list[float] = [0.0, -1.0, 1e12, 7, 1000]
    for edge in EDGES:
        values += [
            edge,
            math.nextafter(edge, -math.inf),
            math.nextafter(edge, math.inf),
            edge * (1 - 1e-12),
            edge * (1 + 1e-12),
        ]
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE v (x REAL)")
    conn.executemany("INSERT INTO v VALUES (?)", [(x,) for x in values])
    for x, sql_bin in conn.execute(f"SELECT x, {rollup.bin_case('x')} FROM v"):
        assert sql_bin == rollup.bin_of(x) == ref_bin(x), x
    # Each edge opens its own bin: [edge, next edge).
    assert [rollup.bin_of(e) for e in EDGES] == list(range(1, len(EDGES) + 1))


def test_the_doctors_thresholds_are_bin_edges():
    # So "p95 >= threshold" is decided from counts alone, exactly.
    for threshold in (doctor.LONG_HOLD_P95_MS, doctor.HIDDEN_WAIT_P95_MS):
        assert threshold in EDGES
    assert queries.EDGES is rollup.EDGES


# -- the table agrees with the events -------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_rollup_agrees_after_random_writes_reaps_and_prunes(tmp_path, seed):
    rng = random.Random(seed)
    now = time.time()
    path = tmp_path / "store.sqlite3"
    writer = writer_with(path, random_rows(rng, now - 5 * 3600, now, 600))
    assert_rollup_agrees(writer.conn)

    # A process that died holding the lock: its transaction is written when reaped.
    hold = store.Hold("k1", "/db", 4242, 1, "T", "ctx", SITES[0], "INSERT", now - 7200.5)
    writer.write(random_rows(rng, now - 3 * 3600, now, 50), [hold], [])
    assert writer.reap_abandoned(lambda pid: pid != 4242, now) == 1
    assert_rollup_agrees(writer.conn)

    # Retention by age, then by row count, each in batches.
    assert writer.prune(max_age=4 * 3600, max_rows=None, batch=70) == 70
    assert_rollup_agrees(writer.conn)
    # By rows: the id span over max_rows goes, oldest ids first.
    first, last = writer.conn.execute("SELECT min(id), max(id) FROM events").fetchone()
    doomed = writer.conn.execute("SELECT count(*) FROM events WHERE id < ?", (first + 90,))
    expected = doomed.fetchone()[0]
    assert writer.prune(max_age=None, max_rows=last - first + 1 - 90, batch=1000) == expected > 0
    assert_rollup_agrees(writer.conn)
    while writer.prune(max_age=3600, max_rows=None, batch=200):
        pass
    assert writer.conn.execute("SELECT min(ts) FROM events").fetchone()[0] >= now - 3600
    assert_rollup_agrees(writer.conn)
    # Emptied buckets leave no rows behind.
    assert writer.conn.execute("SELECT count(*) FROM rollup WHERE n <= 0").fetchone()[0] == 0
    writer.prune(max_age=None, max_rows=0, batch=100_000)
    assert writer.conn.execute("SELECT count(*) FROM rollup").fetchone()[0] == 0
    writer.close()


def test_migrating_a_v4_store_with_events_fills_the_rollup(tmp_path):
    path = tmp_path / "v4.sqlite3"
    raw = sqlite3.connect(path)
    for version in range(1, 5):
        for stmt in store.MIGRATIONS[version]:
            raw.execute(stmt)
    # A v4 store has the first schema's columns only.
    names = [c.name for c in events.COLUMNS if c.name in events.V1_NAMES and c.name != "id"]
    now = time.time()
    rows = random_rows(random.Random(9), now - 3 * 3600, now, 800)
    columns, marks = ", ".join(f'"{n}"' for n in names), ", ".join("?" * len(names))
    raw.executemany(
        f"INSERT INTO events ({columns}) VALUES ({marks})", [[r[n] for n in names] for r in rows]
    )
    raw.execute("PRAGMA user_version=4")
    raw.commit()
    raw.close()

    writer = store.Writer(path)  # migrates
    conn = writer.conn
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION == 9
    assert conn.execute("SELECT count(*) FROM rollup").fetchone()[0] > 100
    assert_rollup_agrees(conn)
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "events_waits_cover" in indexes
    # And it goes on agreeing as the migrated store is written to.
    writer.write(random_rows(random.Random(10), now - 3600, now, 200), [], [])
    assert_rollup_agrees(conn)
    writer.close()


# -- windows ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_store(tmp_path_factory) -> tuple[Path, float]:
    """Five hours of random events, ending now."""
    path = tmp_path_factory.mktemp("rollup") / "store.sqlite3"
    now = time.time()
    writer_with(path, random_rows(random.Random(1), now - 5 * 3600, now, 3000)).close()
    return path, now


def windows(now: float, n: int = 40) -> list[tuple[float, float]]:
    rng = random.Random(2)
    start = now - 5 * 3600
    hour = 3600.0 * math.ceil(start / 3600)
    out = [
        (start - 10, now + 10),  # everything
        (hour, hour + 3 * 3600),  # whole hours exactly
        (hour - 0.5, hour + 7200.25),  # mid-minute edges around whole hours
        (hour + 60, hour + 120),  # one whole minute
        (hour + 10.5, hour + 50.5),  # inside one minute
        (hour + 30, hour + 3599),  # minutes, no whole hour
    ]
    for _ in range(n):
        a, b = sorted(rng.uniform(start - 60, now + 60) for _ in range(2))
        out.append((a, b))
    return out


def test_window_histograms_equal_the_events_in_the_window(long_store):
    path, now = long_store
    conn = store.connect(path, readonly=True)
    stamps = sorted(r[0] for r in conn.execute("SELECT ts FROM events"))
    cases = windows(now) + [(stamps[100], stamps[-100]), (stamps[5], stamps[5])]
    for since, until in cases:
        got = rollup.histograms(conn, since, until, list(rollup.SERIES))
        expected = ref_window(conn, since, until)
        assert {k: h.n for k, h in got.items() if h.count} == {
            k: n for k, (n, _) in expected.items()
        }, (since, until)
        for key, (_, totals) in expected.items():
            assert got[key].total == pytest.approx(totals, rel=1e-9, abs=1e-6)
    conn.close()


def test_long_window_is_the_events_span_over_an_hour(tmp_path, long_store):
    path, now = long_store
    conn = store.connect(path, readonly=True)
    assert rollup.long_window(conn, now - 86400, now + 1) is not None
    assert rollup.long_window(conn, None, None) is not None
    assert rollup.long_window(conn, now - 3000, now) is None  # an hour or less: exact
    assert rollup.long_window(conn, now + 10, now + 90000) is None  # no events
    conn.close()
    # A 24-hour window over a store with 30 minutes of events is read exactly.
    young = tmp_path / "young.sqlite3"
    writer_with(young, random_rows(random.Random(3), now - 1800, now, 100)).close()
    conn = store.connect(young, readonly=True)
    assert rollup.long_window(conn, now - 86400, now) is None
    conn.close()


# -- the p95 estimate -----------------------------------------------------------------


@given(
    st.lists(
        st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=60,
    ),
    st.data(),
)
def test_quantile_estimate_is_in_the_bin_of_the_exact_value(values, data):
    hist = rollup.Hist()
    for v in values:
        hist.n[ref_bin(v)] += 1
        hist.total[ref_bin(v)] += v
    ordered = sorted(values)
    rank = data.draw(st.integers(min_value=1, max_value=len(values)))
    exact = ordered[rank - 1]
    estimate = hist.quantile(rank)
    assert estimate is not None
    assert ref_bin(estimate) == ref_bin(exact)
    same_bin = [v for v in values if ref_bin(v) == ref_bin(exact)]
    if len(same_bin) == 1:  # alone in its bin: exact
        assert estimate == pytest.approx(exact, rel=1e-9, abs=1e-12)
    assert hist.quantile(len(values) + 1) is None


# -- the dashboard over a long window ---------------------------------------------------


def nearest_rank_p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(0.95 * len(ordered)), 1) - 1]


def test_call_sites_and_durations_over_a_long_window_match_the_events(long_store):
    path, now = long_store
    conn = store.connect(path, readonly=True)
    for since, until in [(now - 4 * 3600 - 17.25, now - 29.5), (now - 86400, now)]:
        holds: dict[str, list[float]] = defaultdict(list)
        durations = [0] * rollup.BINS
        hold_bins = [0] * rollup.BINS
        for row in all_events(conn):
            if not since <= row["ts"] <= until:
                continue
            if row["kind"] in ("transaction", "query") and row["hold_ms"] is not None:
                holds[hold_site(row) or events.UNKNOWN].append(row["hold_ms"])
                hold_bins[ref_bin(row["hold_ms"])] += 1
            if row["kind"] == "transaction" and row["duration_ms"] is not None:
                durations[ref_bin(row["duration_ms"])] += 1
        sites = {cs.site: cs for cs in queries.call_sites(conn, since, until, limit=100)}
        assert {s for s, cs in sites.items() if cs.holds} == set(holds)
        for site, values in holds.items():
            cs = sites[site]
            assert cs.p95_estimated
            assert cs.holds == len(values)
            assert cs.hold_ms == pytest.approx(sum(values), rel=1e-9, abs=1e-6)
            assert ref_bin(cs.p95_hold_ms) == ref_bin(nearest_rank_p95(values))
        hist = queries.durations(conn, since, until)
        assert (hist.durations, hist.holds) == (durations, hold_bins)
    # An hour or less: every figure straight from the events, the p95 exact.
    since, until = now - 1800.5, now
    values = [
        r["hold_ms"]
        for r in all_events(conn)
        if since <= r["ts"] <= until
        and r["kind"] in ("transaction", "query")
        and r["hold_ms"] is not None
        and hold_site(r) == SITES[0]
    ]
    (cs,) = [c for c in queries.call_sites(conn, since, until, limit=100) if c.site == SITES[0]]
    assert not cs.p95_estimated
    assert (cs.holds, cs.p95_hold_ms) == (len(values), nearest_rank_p95(values))
    conn.close()


def test_timeline_keeps_the_longest_holds(long_store):
    path, now = long_store
    conn = store.connect(path, readonly=True)
    since, until = now - 4 * 3600, now
    longest = sorted(
        (
            r["hold_ms"]
            for r in all_events(conn)
            if since <= r["ts"] <= until
            and r["kind"] in ("transaction", "query")
            and r["hold_ms"] is not None
        ),
        reverse=True,
    )[:50]
    tl = queries.timeline(conn, since, until, max_holds=50)
    assert [h["hold_ms"] for h in tl.holds] == longest
    assert tl.holds_cut
    conn.close()
