"""pyinstrument profiles, boiled down to a few lines for the report.

Time is charged to the nearest enclosing frame inside the focus packages, so a
lockwatch function is charged for the stdlib and C calls it makes (``re.match``,
``sys._getframe``, ``sqlite3`` ...), not the Django frames above it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from pyinstrument import Profiler

INTERVAL = 0.0001


def profile(fn: Callable[[], Any], interval: float = INTERVAL) -> Any:
    profiler = Profiler(interval=interval)
    profiler.start()
    try:
        fn()
    finally:
        profiler.stop()
    return profiler.last_session


def package_dir(module: Any) -> str:
    return os.path.dirname(os.path.abspath(module.__file__)) + os.sep


def _under(frame: Any, prefixes: tuple[str, ...]) -> bool:
    return bool(prefixes) and (frame.file_path or "").startswith(prefixes)


def _label(frame: Any) -> str:
    path = frame.file_path or ""
    short = os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))
    return f"{short}:{frame.line_no} {frame.function}"


def summary(
    session: Any, focus: Iterable[str], hosts: Iterable[str], ops: int, top: int = 8
) -> dict[str, Any]:
    """Where the focus package's time goes, as shares of all sampled time.

    A focus frame is charged for its own time and for the stdlib/C calls below it;
    charging stops at a host frame (Django, the benchmark), so a wrapper is not
    charged for the query it wraps.
    """
    focus, hosts = tuple(focus), tuple(hosts)
    root = session.root_frame()
    if root is None or root.time <= 0:
        return {"sampled_us": 0.0, "focus_share": 0.0, "functions": []}
    charged: Counter[str] = Counter()
    stack: list[tuple[Any, str | None]] = [(root, None)]
    while stack:
        frame, owner = stack.pop()
        if _under(frame, focus):
            owner = _label(frame)
        elif _under(frame, hosts):
            owner = None
        if owner is not None:
            # Exclusive time; synthetic "[self]" children are visited on their own.
            charged[owner] += frame.time - sum(c.time for c in frame.children)
        stack.extend((child, owner) for child in frame.children)
    total = root.time
    return {
        "sampled_us": round(total * 1e6 / max(ops, 1), 1),
        "focus_share": round(sum(charged.values()) / total, 4),
        "functions": [
            {"function": name, "share": round(t / total, 4)} for name, t in charged.most_common(top)
        ],
    }


def render(summary_: dict[str, Any], label: str, us_per_op: float | None = None) -> list[str]:
    """Markdown lines; shares are turned into µs/op of the unprofiled run when given."""

    def amount(share: float) -> str:
        pct = f"{share * 100:.1f}%"
        return f"{pct} ≈ {share * us_per_op:.1f} µs/op" if us_per_op else pct

    out = [f"- {label}: {amount(summary_['focus_share'])} of the time is in the package:"]
    out += [f"  - `{f['function']}`: {amount(f['share'])}" for f in summary_["functions"]]
    return out
