"""What each chart partial draws: the figure's JSON, within its byte budget.

The busy and wait charts show the span of the window that has data (a 15 s incident
in the last hour is 15 s wide, in buckets fit for it, not a 1-px spike); the timeline
adds the holds still going, which grow to now in the browser.
"""

from __future__ import annotations

import gzip
import json
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockwatch.events import IN_WINDOW

from . import charts, heldnow, params, queries

CHARTS = ("busy", "waits", "durations", "timeline")
EMPTY = {
    "busy": "No busy errors in this window.",
    "waits": "No lock waits in this window.",
    "durations": "No transactions or writes in this window.",
    "timeline": "No write-lock holds, waits or busy errors in this window.",
}
TIMELINE_BUDGET = 100_000  # bytes, gzipped as sent: one live refresh of the timeline
# The busy and wait charts never zoom in to less than this (seconds).
MIN_SPAN = 30.0


@dataclass(frozen=True)
class Drawn:
    text: str  # the figure's JSON ("" when there is nothing to draw)
    empty: bool
    note: str = ""


def build(name: str, conn: sqlite3.Connection, v: params.View, revision: str, store: Path) -> Drawn:
    w = v.window
    if name in ("busy", "waits"):
        since, until, bucket = data_span(conn, w)
        if name == "busy":
            series = queries.busy_per_second(conn, since, until, bucket)
            figure = charts.busy_chart(series, since, until, revision)
        else:
            series = queries.wait_percentiles(conn, since, until, bucket)
            figure = charts.waits_chart(series, since, until, revision)
        if (since, until) != (w.since, w.until):
            _say_zoomed(figure, since, until, w, bucket)
        return Drawn(figure_json(figure), series.empty)
    if name == "durations":
        hist = queries.durations(conn, w.since, w.until)
        return Drawn(figure_json(charts.durations_chart(hist, revision)), hist.empty)
    tl = queries.timeline(conn, w.since, w.until)
    if w.live:  # a hold still going grows to now; a past window has no "now"
        opened = heldnow.open_holds(conn, store)
        if opened:
            holds = opened + tl.holds
            lanes, contexts = queries._lanes(holds, tl.marks)
            tl = queries.Timeline(holds, tl.marks, lanes, contexts, tl.holds_cut, tl.marks_cut)
    tl, text = _timeline_within(tl, w.since, w.until, revision)
    note = ""
    if tl.holds_cut or tl.marks_cut:
        note = (
            f"Showing the {len(tl.holds):,} longest holds and the {len(tl.marks):,} "
            "newest waits and busy errors; pick a shorter window to see them all."
        )
    return Drawn(text, tl.empty, note)


def data_span(conn: sqlite3.Connection, w: params.Window) -> tuple[float, float, int]:
    """The part of the window with busy errors or waits, padded, and its bucket width.

    Each end is one lookup in the (kind, ts) index. At least MIN_SPAN seconds (or the
    whole window when it is shorter), and never outside the window.
    """
    firsts, lasts = [], []
    for kind in ("busy", "wait"):
        lo, hi = conn.execute(
            f"SELECT min(ts), max(ts) FROM events WHERE kind = ? AND {IN_WINDOW}",
            (kind, w.since, w.until),
        ).fetchone()
        if lo is not None:
            firsts.append(lo)
            lasts.append(hi)
    if not firsts or w.seconds <= MIN_SPAN:
        return w.since, w.until, w.bucket()
    lo, hi = min(firsts), max(lasts)
    pad = max((hi - lo) * 0.1, 2.0)
    lo, hi = lo - pad, hi + pad
    if hi - lo < MIN_SPAN:
        middle = (lo + hi) / 2
        lo, hi = middle - MIN_SPAN / 2, middle + MIN_SPAN / 2
    lo, hi = max(lo, w.since), min(hi, w.until)
    if hi - lo >= w.seconds * 0.8:  # most of the window anyway: show all of it
        return w.since, w.until, w.bucket()
    return lo, hi, params.Window(w.name, lo, hi, w.live).bucket()


def _say_zoomed(figure: dict[str, Any], since: float, until: float, w: params.Window,
                bucket: int) -> None:  # fmt: skip
    """The x axis says it shows part of the window, which part, and how to see it all."""
    span = until - since
    shown = f"{span:.0f} s" if span < 120 else f"{span / 60:.0f} min"
    title = figure["layout"]["xaxis"]["title"]
    title["text"] = (
        f"UTC, {bucket} s buckets · the {shown} with data, of the window"
        f" ({charts.clock(since)[:8]}–{charts.clock(until)[:8]})"
    )
    figure["layout"]["meta"] = {"lw_zoomed": [since, until, w.since, w.until]}


def _timeline_within(
    tl: queries.Timeline, since: float, until: float, rev: str
) -> tuple[queries.Timeline, str]:
    """The timeline's figure in at most TIMELINE_BUDGET bytes on the wire: with many
    distinct SQL texts and call sites, fewer holds (the longest) and marks (the newest)."""
    for _ in range(4):
        text = figure_json(charts.timeline_chart(tl, since, until, rev))
        if len(text) <= TIMELINE_BUDGET:
            return tl, text
        size = len(gzip.compress(text.encode(), 6))
        if size <= TIMELINE_BUDGET * 0.95:
            return tl, text
        share = TIMELINE_BUDGET * 0.85 / size
        tl = tl.cut(int(len(tl.holds) * share), int(len(tl.marks) * share))
    return tl, text


def figure_json(figure: dict[str, Any]) -> str:
    # As json_script does: nothing in the JSON may close the <script> element.
    text = json.dumps(figure, separators=(",", ":"), allow_nan=False, default=_nan_safe)
    return text.replace("<", "\\u003C").replace(">", "\\u003E").replace("&", "\\u0026")


def _nan_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
