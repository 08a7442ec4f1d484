"""Query-string parameters of the dashboard's pages and partials.

Everything a page reads from the URL is parsed here, so every bad value gets
the same one-line 400 message and never reaches SQL.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from lockwatch import events
from lockwatch.store.filters import FilterError, Filters, parse, parse_time, shown

WINDOWS: dict[str, float] = {"5m": 300.0, "1h": 3600.0, "24h": 86400.0}
DEFAULT_WINDOW = "1h"
CUSTOM = "custom"
# Bucket widths for the time charts, so a window never has more than ~300 points.
BUCKETS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
MAX_POINTS = 300
PAGE_SIZE = 50
MAX_PAGE = 100_000

CALLSITE_SORTS = ("hold_ms", "p95_hold_ms", "waits_caused", "busy_caused", "busy_suffered", "site")


@dataclass(frozen=True)
class Window:
    name: str  # 5m, 1h, 24h or custom
    since: float
    until: float
    live: bool  # the window ends now and moves with it

    @property
    def seconds(self) -> float:
        return max(self.until - self.since, 1.0)

    def bucket(self) -> int:
        for width in BUCKETS:
            if self.seconds / width <= MAX_POINTS:
                return width
        # Longer than 300 days: whole days, still at most MAX_POINTS of them (a
        # window of years must not build millions of points).
        day = BUCKETS[-1]
        return day * math.ceil(self.seconds / day / MAX_POINTS)

    def as_query(self) -> dict[str, str]:
        if self.live:
            return {"window": self.name}
        return {"window": CUSTOM, "since": events.iso(self.since), "until": events.iso(self.until)}


@dataclass(frozen=True)
class View:
    window: Window
    filters: Filters  # the table filters, without the window
    page: int = 1
    sort: str = "hold_ms"
    descending: bool = True

    def table_filters(self) -> Filters:
        """The filters plus the window: exactly what the events table shows."""
        return replace(self.filters, since=self.window.since, until=self.window.until)


def _window(name: str, since: str | None, until: str | None, now: float) -> Window:
    if name in WINDOWS:
        if since or until:
            raise FilterError(f"window={name} cannot be combined with since or until")
        return Window(name, now - WINDOWS[name], now, live=True)
    if name != CUSTOM:
        choices = ", ".join([*WINDOWS, CUSTOM])
        raise FilterError(f"window={shown(name)} is not one of {choices}")
    if not since:
        raise FilterError("window=custom needs since (and optionally until)")
    start = parse_time("since", since, now)
    end = parse_time("until", until, now) if until else now
    if start > end:
        raise FilterError("since is after until")
    return Window(CUSTOM, start, end, live=not until)


def parse_view(params: Mapping[str, Any], now: float | None = None) -> View:
    """Parse a QueryDict (or dict); raise FilterError with a one-line message."""
    now = time.time() if now is None else now
    values = {k: params.get(k) for k in params}
    name = str(values.pop("window", None) or "").strip()
    since = str(values.pop("since", None) or "").strip() or None
    until = str(values.pop("until", None) or "").strip() or None
    if not name:
        name = CUSTOM if since or until else DEFAULT_WINDOW
    window = _window(name, since, until, now)

    page_text = str(values.pop("page", None) or "1").strip()
    # ASCII digits only, and few: "²" is a digit to isdigit() but not to int().
    digits = page_text.isascii() and page_text.isdigit() and len(page_text) <= 6
    if not digits or not 1 <= int(page_text) <= MAX_PAGE:
        raise FilterError(f"page={shown(page_text)} is not a page number (1 to {MAX_PAGE})")
    sort = str(values.pop("sort", None) or "hold_ms").strip()
    if sort not in CALLSITE_SORTS:
        raise FilterError(f"sort={shown(sort)} is not one of {', '.join(CALLSITE_SORTS)}")
    direction = str(values.pop("dir", None) or "desc").strip()
    if direction not in ("asc", "desc"):
        raise FilterError(f"dir={shown(direction)} is not asc or desc")
    # The rest are the shared event filters; unknown names are refused there.
    filters = parse(values)
    return View(window, filters, int(page_text), sort, direction == "desc")
