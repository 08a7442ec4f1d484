"""Event filters shared by the CSV export, the CLI and the dashboard.

Every bad value is refused with a one-line message that names it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lockwatch import events

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class FilterError(ValueError):
    pass


def shown(text: str, limit: int = 60) -> str:
    """A bad value as quoted in a message: cut short, so a 20 KB value makes a short line."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


# No event is older than the epoch; past 9999-12-30 a time cannot be written back as ISO-8601.
EARLIEST = 0.0
LATEST = 253402128000.0  # 9999-12-30T00:00:00Z


def parse_time(name: str, text: str, now: float | None = None) -> float:
    """ISO-8601 (naive is UTC) or a relative age such as 15m, 2h or 1d.

    Clamped to the epoch .. year 9999: ``99999999w`` or ``0001-01-01`` mean
    "from the start", and every result can be shown and put back in a URL.
    """
    m = _RELATIVE.match(text)
    if m:
        value = (time.time() if now is None else now) - float(m.group(1)) * _UNIT[m.group(2)]
    else:
        try:
            value = events.parse_iso(text)
        except ValueError:
            raise FilterError(
                f"{name}={shown(text)} is not an ISO-8601 time or an age like 15m, 2h, 1d"
            ) from None
    return min(max(value, EARLIEST), LATEST)


@dataclass(frozen=True)
class Filters:
    since: float | None = None
    until: float | None = None
    kind: str | None = None
    classification: str | None = None
    call_site: str | None = None
    context: str | None = None
    pid: int | None = None
    q: str | None = None  # text search on the SQL

    def where(self) -> tuple[str, list[Any]]:
        parts: list[str] = []
        args: list[Any] = []
        if self.since is not None:
            parts.append("ts >= ?")
            args.append(self.since)
        if self.until is not None:
            parts.append("ts <= ?")
            args.append(self.until)
        if self.kind:
            parts.append("kind = ?")
            args.append(self.kind)
        if self.classification:
            parts.append("classification = ?")
            args.append(self.classification)
        if self.call_site:
            parts.append("(call_site = ? OR blocker_call_site = ? OR lock_call_site = ?)")
            args += [self.call_site] * 3
        if self.context:
            parts.append("(context LIKE ? ESCAPE '\\' OR path = ?)")
            args += [_like(self.context), self.context]
        if self.pid is not None:
            parts.append("pid = ?")
            args.append(self.pid)
        if self.q:
            parts.append("sql LIKE ? ESCAPE '\\'")
            args.append(_like(self.q))
        return " AND ".join(parts), args

    def as_query(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in FIELDS:
            value = getattr(self, name)
            if value is None or value == "":
                continue
            out[name] = events.iso(value) if name in ("since", "until") else str(value)
        return out


FIELDS = ("since", "until", "kind", "classification", "call_site", "context", "pid", "q")


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def parse(params: Mapping[str, Any], *, strict: bool = True) -> Filters:
    """Filters from a query string or CLI options; unknown names refused when strict."""
    values: dict[str, Any] = {}
    for name, raw in params.items():
        if name not in FIELDS:
            if strict:
                raise FilterError(f"unknown filter {shown(name)}; use one of {', '.join(FIELDS)}")
            continue
        if raw is None:
            continue
        text = str(raw)
        if "\x00" in text or len(text) > 2000:
            raise FilterError(f"{name} is not a valid value")
        text = text.strip()
        if text == "":
            continue
        if name in ("since", "until"):
            values[name] = parse_time(name, text)
        elif name == "kind":
            if text not in events.KINDS:
                raise FilterError(f"kind={shown(text)} is not one of {', '.join(events.KINDS)}")
            values[name] = text
        elif name == "classification":
            if text not in events.CLASSIFICATIONS:
                choices = ", ".join(events.CLASSIFICATIONS)
                raise FilterError(f"classification={shown(text)} is not one of {choices}")
            values[name] = text
        elif name == "pid":
            # ASCII digits only: "²" is a digit to isdigit() but not to int().
            if not (text.isascii() and text.isdigit()) or len(text) > 10:
                raise FilterError(f"pid={shown(text)} is not a process id")
            values[name] = int(text)
        else:
            values[name] = text
    f = Filters(**values)
    if f.since is not None and f.until is not None and f.since > f.until:
        raise FilterError("since is after until")
    return f
