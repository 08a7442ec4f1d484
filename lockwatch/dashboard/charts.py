"""Plotly figures, built on the server from ``queries`` results and drawn by plotly.js.

The browser only calls ``Plotly.react`` with what these return; ``uirevision``
keeps a user's zoom across live refreshes of the same window. plotly.js draws a
subset of HTML (links included) in tick labels, hover text and names, so every
stored text put in a figure goes through ``_h``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import plotly.graph_objects as go

from lockwatch import events

from .queries import Histogram, Series, Timeline

CLASS_COLORS = {
    "timeout": "#d62728",
    "upgrade": "#9467bd",
    "snapshot": "#8c564b",
    "locked": "#e377c2",
    "other": "#7f7f7f",
}
HOLD_COLORS = {"transaction": "#1f77b4", "query": "#17becf"}
WAIT_COLOR = "#ff7f0e"
FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"


def t(ts: float | None) -> str | None:
    """A naive UTC time string: plotly.js has no time zones, the axes say UTC."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _layout(fig: go.Figure, revision: str, height: int = 260, **extra: Any) -> go.Figure:
    margin = {"l": 56, "r": 16, "t": 8, "b": 36, **extra.pop("margin", {})}
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin=margin,
        font={"family": FONT, "size": 12},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        hovermode="closest",
        uirevision=revision,
        **extra,
    )
    return fig


def t_ms(ts: float) -> str:
    """As t(), to the millisecond: a timeline holds thousands of these."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def clock(ts: float) -> str:
    """A time of day in UTC to the millisecond, for hover text."""
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S.%f")[:-3]


def compact(fig: dict[str, Any]) -> dict[str, Any]:
    """Each text once: the text columns of every trace's customdata and its lanes (y)
    become indexes into ``fig["strings"]``; lockwatch.js puts the text back before
    drawing. A timeline of 2,000 points repeats a few call sites, contexts and SQL texts."""
    strings: list[str] = []
    index: dict[str, int] = {}

    def ref(text: str) -> int:
        at = index.get(text)
        if at is None:
            at = index[text] = len(strings)
            strings.append(text)
        return at

    for trace in fig["data"]:
        rows = trace.get("customdata")
        if rows:
            columns = sorted({j for row in rows for j, v in enumerate(row) if isinstance(v, str)})
            for row in rows:
                for j in columns:
                    if isinstance(row[j], str):
                        row[j] = ref(row[j])
            trace["meta"] = {**trace.get("meta", {}), "lw_columns": columns}
        ys = trace.get("y")
        if ys and any(isinstance(y, str) for y in ys):
            trace["y"] = [ref(y) if isinstance(y, str) else y for y in ys]
            trace["meta"] = {**trace.get("meta", {}), "lw_y": True}
    fig["strings"] = strings
    return fig


def _range(since: float, until: float) -> list[str | None]:
    return [t(since), t(until)]


def busy_chart(series: Series, since: float, until: float, revision: str) -> dict[str, Any]:
    x = [t(s) for s in series.starts]
    fig = go.Figure()
    for cls in events.CLASSIFICATIONS:
        values = series.values.get(cls)
        if not values or not any(values):
            continue
        fig.add_bar(
            x=x,
            y=values,
            name=cls,
            marker_color=CLASS_COLORS.get(cls),
            hovertemplate=f"%{{x}} UTC<br>{cls}: %{{y:.3g}}/s<extra></extra>",
        )
    _layout(fig, revision, barmode="stack", bargap=0.05)
    fig.update_xaxes(range=_range(since, until), title_text=f"UTC, {series.bucket} s buckets")
    fig.update_yaxes(title_text="busy errors/s", rangemode="tozero")
    figure: dict[str, Any] = fig.to_plotly_json()
    return figure


def waits_chart(series: Series, since: float, until: float, revision: str) -> dict[str, Any]:
    x = [t(s) for s in series.starts]
    most = max((c or 0 for c in series.values["count"]), default=0)
    fig = go.Figure()
    fig.add_bar(
        x=x,
        y=series.values["count"],
        name="count",
        yaxis="y2",
        marker_color="rgba(127,127,127,0.25)",
        hovertemplate="%{x} UTC<br>%{y} waits<extra></extra>",
    )
    for name, color, dash in (
        ("p50", "#2ca02c", "solid"),
        ("p95", WAIT_COLOR, "solid"),
        ("max", "#d62728", "dot"),
    ):
        fig.add_scatter(
            x=x,
            y=series.values[name],
            name=f"{name} wait",
            mode="lines+markers",
            connectgaps=False,
            marker={"size": 4},
            line={"color": color, "dash": dash, "width": 2},
            hovertemplate=f"%{{x}} UTC<br>{name}: %{{y:.1f}} ms<extra></extra>",
        )
    _layout(
        fig,
        revision,
        margin={"r": 56},
        yaxis={"title": {"text": "wait (ms)"}, "rangemode": "tozero"},
        yaxis2={
            "title": {"text": "waits"},
            # Whole numbers: a count of 1 should not get ticks at 0.33 and 0.67.
            "tickformat": ",d",
            "dtick": None if most > 8 else 1,
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
            "showgrid": False,
        },
    )
    fig.update_xaxes(range=_range(since, until), title_text=f"UTC, {series.bucket} s buckets")
    figure: dict[str, Any] = fig.to_plotly_json()
    return figure


def durations_chart(hist: Histogram, revision: str) -> dict[str, Any]:
    labels, ranges = hist.labels(), hist.ranges()
    # Show the span of bins that have data, plus one either side.
    used = [i for i, (a, b) in enumerate(zip(hist.durations, hist.holds, strict=True)) if a or b]
    lo, hi = (max(used[0] - 1, 0), min(used[-1] + 2, len(labels))) if used else (0, len(labels))
    fig = go.Figure()
    for name, values, color, noun in (
        ("transaction duration", hist.durations, "#1f77b4", "transactions"),
        ("write-lock hold", hist.holds, "#ff7f0e", "holds"),
    ):
        fig.add_bar(
            x=labels[lo:hi],
            y=values[lo:hi],
            name=name,
            marker_color=color,
            customdata=ranges[lo:hi],
            hovertemplate=f"%{{customdata}}: %{{y}} {noun}<extra></extra>",
        )
    _layout(fig, revision, barmode="group", bargap=0.15)
    fig.update_yaxes(title_text="count", rangemode="tozero")
    fig.update_xaxes(type="category", title_text="duration (bins by lower edge)")
    figure: dict[str, Any] = fig.to_plotly_json()
    return figure


def _h(text: str | None) -> str:
    """Stored text as text in plotly's little HTML: SQL such as ``a < ?``, a thread
    named ``<a href=…>``. plotly turns these three entities back into the characters."""
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def lane(pid: int | None, thread: str | None, context: str = "") -> str:
    """A lane's label (a category of the y axis: the same text places its marks):
    ``command:restock · pid 20254``; a thread other than the main one is named too."""
    who = f"pid {pid or '?'}" if thread == "MainThread" else f"pid {pid or '?'} · {thread or '?'}"
    return _h(f"{context} · {who}" if context else who)


def _hover_lines(*pairs: tuple[str, str]) -> str:
    return "<br>".join(f"<b>{label}</b> {value}" for label, value in pairs)


def _focus(tl: Timeline, since: float, until: float) -> list[str | None]:
    """The span that has holds or marks, padded: a 1 s hold is invisible in a 24 h axis."""
    starts = [h["start"] for h in tl.holds] + [m["ts"] for m in tl.marks]
    ends = [h["start"] + (h["hold_ms"] or 0) / 1000 for h in tl.holds] + [m["at"] for m in tl.marks]
    if not starts:
        return _range(since, until)
    lo, hi = min(starts), max(ends)
    pad = max((hi - lo) * 0.08, 1.0)
    if any(h.get("open") for h in tl.holds):
        # Room past now for a hold still going to grow into (the page asks for a new
        # figure when it reaches the edge).
        return _range(max(lo - pad, since), hi + max((hi - lo) * 0.15, 5.0))
    return _range(max(lo - pad, since), min(hi + pad, until))


OPEN_COLOR = "#c0392b"


def _open_holds(fig: go.Figure, holds: list[dict[str, Any]], lane_of: Any) -> None:
    """Holds still going: bars from the lock to now, grown by lockwatch.js each second
    from the time the figure was made (``lw_open``) until a new figure comes."""
    now = time.time()
    fig.add_bar(
        orientation="h",
        base=[t_ms(h["start"]) for h in holds],
        x=[round(h["hold_ms"], 2) for h in holds],
        y=[lane_of(h["pid"], h["thread"]) for h in holds],
        name="still held",
        marker={"color": OPEN_COLOR, "line": {"width": 0}, "pattern": {"shape": "/"}},
        opacity=0.9,
        width=0.7,
        customdata=[
            [
                None,
                _h(h["site"]),
                _h(h["context"]),
                _h(h["lock_statement"] or h["sql"]),
                round(h["hold_ms"], 2),
                clock(h["start"]),
            ]
            for h in holds
        ],  # fmt: skip
        hovertemplate=_hover_lines(
            ("still held", "for %{customdata[4]:.1f} ms so far"),
            ("call site", "%{customdata[1]}"),
            ("context", "%{customdata[2]}"),
            ("sql", "%{customdata[3]}"),
        )
        + "<extra>since %{customdata[5]} UTC</extra>",
        meta={"lw_open": now},
    )


def timeline_chart(tl: Timeline, since: float, until: float, revision: str) -> dict[str, Any]:
    """One lane per process and thread; hold bars, wait and busy markers, blocker links."""
    labels = {key: lane(*key, tl.contexts.get(key, "")) for key in tl.lanes}

    def lane_of(pid: int | None, thread: str | None) -> str:
        return labels[(pid or 0, thread or "?")]

    lanes = [labels[key] for key in tl.lanes]
    fig = go.Figure()
    opened = [h for h in tl.holds if h.get("open")]
    if opened:
        _open_holds(fig, opened, lane_of)
    for kind, name in (("transaction", "transaction hold"), ("query", "autocommit write")):
        holds = [h for h in tl.holds if h["kind"] == kind and not h.get("open")]
        if not holds:
            continue
        fig.add_bar(
            orientation="h",
            base=[t_ms(h["start"]) for h in holds],
            x=[round(h["hold_ms"], 2) for h in holds],
            y=[lane_of(h["pid"], h["thread"]) for h in holds],
            name=name,
            marker={"color": HOLD_COLORS[kind], "line": {"width": 0}},
            opacity=0.85,
            width=0.6,
            customdata=[
                [
                    h["id"],
                    _h(h["site"]),
                    _h(h["context"]),
                    _h(h["lock_statement"] or h["sql"]),
                    round(h["hold_ms"], 2),
                    clock(h["start"]),
                ]
                for h in holds
            ],
            # Not %{x}: on a date axis a bar's x reads as a date, and its length as NaN.
            hovertemplate=_hover_lines(
                ("held", "%{customdata[4]:.1f} ms"),
                ("call site", "%{customdata[1]}"),
                ("context", "%{customdata[2]}"),
                ("sql", "%{customdata[3]}"),
            )
            # Not %{base|...}: a number (ms) there is not formatted as a date.
            + "<extra>%{customdata[5]} UTC</extra>",
        )

    marks = tl.marks
    waits = [m for m in marks if m["kind"] == "wait"]
    if waits:
        # The wait itself as a thin span, then its end as a marker.
        xs: list[str | None] = []
        ys: list[str | None] = []
        for m in waits:
            xs += [t_ms(m["ts"]), t_ms(m["at"]), None]
            ys += [lane_of(m["pid"], m["thread"])] * 2 + [None]
        fig.add_scatter(
            x=xs,
            y=ys,
            mode="lines",
            line={"color": WAIT_COLOR, "width": 2},
            hoverinfo="skip",
            showlegend=False,
        )
    # A wait that gave up ends in its busy error: the busy marker stands for both.
    acquired = [m for m in waits if m["outcome"] != "gave_up"]
    for kind, label, items, symbol in (
        ("wait", "lock wait", acquired, "triangle-right"),
        ("busy", "busy error", [m for m in marks if m["kind"] == "busy"], "x"),
    ):
        if not items:
            continue
        colors = [
            CLASS_COLORS.get(m["classification"], CLASS_COLORS["other"])
            if kind == "busy"
            else WAIT_COLOR
            for m in items
        ]
        fig.add_scatter(
            x=[t_ms(m["at"]) for m in items],
            y=[lane_of(m["pid"], m["thread"]) for m in items],
            mode="markers",
            name=label,
            # lockwatch.js draws markers that would overlap at the current zoom as one,
            # with their count (the "lw_group" traces).
            meta={"lw_group": kind},
            marker={
                "symbol": symbol,
                "size": 12 if kind == "busy" else 9,
                # One color, not one a point, when they are all the same.
                "color": colors if len(set(colors)) > 1 else colors[0],
                "line": {
                    "width": 2 if kind == "busy" else 0,
                    "color": colors if len(set(colors)) > 1 else colors[0],
                },
            },
            customdata=[
                [
                    m["id"],
                    _h(m["call_site"]),
                    _h(m["context"]),
                    _h(m["sql"]),
                    _h(m["blocker_call_site"] or "not attributed yet"),
                    _h(m["blocker_context"]),
                    round(m["wait_ms"] or 0.0, 2),
                    _h(m["classification"] or m["outcome"]),
                    clock(m["at"]),
                ]
                for m in items
            ],
            hovertemplate=_hover_lines(
                (label, "%{customdata[7]} after %{customdata[6]:.1f} ms"),
                ("call site", "%{customdata[1]}"),
                ("context", "%{customdata[2]}"),
                ("sql", "%{customdata[3]}"),
                ("blocked by", "%{customdata[4]}"),
                ("blocker context", "%{customdata[5]}"),
            )
            + "<extra>%{customdata[8]} UTC</extra>",
        )
    linked = [m for m in marks if m["blocker_pid"]]
    if linked:
        xs, ys = [], []
        for m in linked:
            xs += [t_ms(m["at"]), t_ms(m["at"]), None]
            ys += [
                lane_of(m["pid"], m["thread"]),
                lane_of(m["blocker_pid"], m["blocker_thread"]),
                None,
            ]
        fig.add_scatter(
            x=xs,
            y=ys,
            mode="lines",
            name="blocked by",
            line={"color": "rgba(80,80,80,0.55)", "dash": "dot", "width": 1},
            hoverinfo="skip",
            meta={"lw_links": True},  # lockwatch.js draws one a pixel bin
        )
    height = min(max(140 + 34 * len(lanes), 240), 1100)
    _layout(fig, revision, height=height, barmode="overlay", margin={"l": 200})
    fig.update_xaxes(type="date", range=_focus(tl, since, until), title_text="UTC")
    fig.update_yaxes(
        type="category",
        categoryorder="array",
        categoryarray=lanes,
        autorange="reversed",
    )
    return compact(fig.to_plotly_json())
