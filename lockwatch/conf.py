"""Settings: one defaults dict, read once, cleared when Django's settings change.

``build`` checks every value and names each bad one (the system checks show them as
``lockwatch.E001``/``E003``). ``get_config`` never raises: with a bad value it logs once
and returns the defaults with capture off, so a typo never stops ``django.setup()``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("lockwatch")

DEFAULTS: dict[str, Any] = {
    # Where events go: a separate SQLite file, never the watched database.
    # None means <BASE_DIR or cwd>/lockwatch.sqlite3, or $LOCKWATCH_STORE.
    "STORE": None,
    "ENABLED": True,
    # Events held in memory between flushes; past this they are dropped and counted.
    "BUFFER_SIZE": 20_000,
    "FLUSH_INTERVAL": 0.1,
    # Which statements become query events: "all", "slow" (slower than
    # SLOW_QUERY_MS, or that waited or failed) or "none". Waits and busy errors are
    # always recorded; every statement is counted in its request's totals.
    "CAPTURE_QUERIES": "slow",
    "SLOW_QUERY_MS": 100,
    # Autocommit writes and transactions are events when they waited, failed, made
    # someone wait, or held the lock (a transaction: lasted) this long or longer. The
    # rest are counted per second and call site, with their hold times (not with
    # CAPTURE_QUERIES="all", which keeps every one). 0 keeps every one too.
    "HOLD_RECORD_MS": 10,
    # Parameter values are never stored unless this is on.
    "CAPTURE_PARAMS": False,
    "SQL_MAX_LENGTH": 4096,
    "PARAMS_MAX_LENGTH": 1024,
    # Install the exact-wait busy handler where the SQLite handle can be verified.
    "EXACT_WAITS": True,
    # Poll for the lock every 0.25-2 ms instead of on SQLite's own schedule
    # (1 ms up to 100 ms). Faster hand-off, but it changes how the app contends.
    "FAST_HANDOFF": False,
    # Call sites: paths relative to this; None means BASE_DIR or cwd.
    "PROJECT_ROOT": None,
    # Path prefixes that count as your code even under site-packages, and
    # prefixes that never do.
    "CALL_SITE_INCLUDE": [],
    "CALL_SITE_EXCLUDE": [],
    # Retention, enforced by the flusher in small batches.
    "RETENTION_MAX_AGE": 7 * 24 * 3600,
    "RETENTION_MAX_ROWS": 1_000_000,
    # No longer used (blockers come from the live holder table at capture); still
    # accepted and validated so that existing settings keep working.
    "ATTRIBUTION_GRACE": 3.0,
    # A channel layer alias to publish batches to (see the dashboard).
    "CHANNEL_LAYER": None,
    # Dashboard access when mounted in a project: a dotted path to f(user) -> bool.
    "ACCESS_CHECK": "lockwatch.access.is_staff",
    # Alert rules that `lockwatch serve` evaluates (never the app): None, or a dict of
    # ALERT_DEFAULTS' keys.
    "ALERTS": None,
}

# LOCKWATCH["ALERTS"]: a key left out takes this value; a rule set to None is off.
# The rules' defaults are those of contrib/prometheus/lockwatch-rules.yml.
ALERT_DEFAULTS: dict[str, Any] = {
    "WEBHOOK": None,  # an http(s) URL to POST each alert to; None: the log only
    "DASHBOARD_URL": None,  # None: lockwatch serve's --public-url, else its own address
    "BUSY_PER_MINUTE": 0,  # busy errors in the last minute above this
    "HOLD_SECONDS": 10,  # a write lock held longer than this right now
    "WAIT_P95_SECONDS": 1.0,  # the p95 lock wait over WAIT_WINDOW above this
    "WAIT_WINDOW": 300,
    "COOLDOWN": 600,  # seconds before the same alert is sent again
    "INTERVAL": 10,  # seconds between evaluations
    "TIMEOUT": 5,  # seconds a webhook POST may take
}

# Whole numbers go into SQL (retention) and comparisons; SQLite's integers stop here.
_INT_MAX = 2**63 - 1
# Seconds handed to Event.wait(): past this it raises OverflowError in the flusher.
_WAIT_MAX = threading.TIMEOUT_MAX


_FLAGS = ("ENABLED", "CAPTURE_PARAMS", "EXACT_WAITS", "FAST_HANDOFF")
_NUMBERS: dict[str, dict[str, Any]] = {
    "BUFFER_SIZE": {"minimum": 1, "whole": True},
    "FLUSH_INTERVAL": {"minimum": 0.001, "maximum": _WAIT_MAX},
    "SLOW_QUERY_MS": {"minimum": 0},
    "HOLD_RECORD_MS": {"minimum": 0},
    "SQL_MAX_LENGTH": {"minimum": 16, "whole": True},
    "PARAMS_MAX_LENGTH": {"minimum": 16, "whole": True},
    "RETENTION_MAX_AGE": {"minimum": 1, "allow_none": True},
    "RETENTION_MAX_ROWS": {"minimum": 1, "whole": True, "allow_none": True},
    "ATTRIBUTION_GRACE": {"minimum": 0, "maximum": _WAIT_MAX},
}
_ALERT_NUMBERS: dict[str, dict[str, Any]] = {
    "BUSY_PER_MINUTE": {"minimum": 0, "whole": True, "allow_none": True},
    "HOLD_SECONDS": {"minimum": 0, "allow_none": True},
    "WAIT_P95_SECONDS": {"minimum": 0, "allow_none": True},
    "WAIT_WINDOW": {"minimum": 1, "maximum": 7 * 24 * 3600},
    "COOLDOWN": {"minimum": 0},
    "INTERVAL": {"minimum": 0.05, "maximum": _WAIT_MAX},
    "TIMEOUT": {"minimum": 0.1, "maximum": 60},
}


@dataclass(frozen=True)
class Config:
    store: Path
    enabled: bool
    buffer_size: int
    flush_interval: float
    capture_queries: str
    slow_query: float  # seconds
    capture_params: bool
    hold_record: float  # seconds
    sql_max_length: int
    params_max_length: int
    exact_waits: bool
    fast_handoff: bool
    project_root: Path
    call_site_include: tuple[str, ...]
    call_site_exclude: tuple[str, ...]
    retention_max_age: float | None
    retention_max_rows: int | None
    attribution_grace: float
    channel_layer: str | None
    access_check: str
    alerts: Alerts | None = None


@dataclass(frozen=True)
class Alerts:
    """LOCKWATCH["ALERTS"], checked: what ``lockwatch serve`` evaluates."""

    webhook: str | None
    dashboard_url: str | None
    busy_per_minute: int | None
    hold_seconds: float | None
    wait_p95_seconds: float | None
    wait_window: float
    cooldown: float
    interval: float
    timeout: float


class ConfigError(ValueError):
    """Bad LOCKWATCH values; ``problems`` has one line per value, each naming it."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems: tuple[str, ...] = problems


def _user_settings() -> tuple[Any, Any]:
    """The raw LOCKWATCH setting and BASE_DIR, unchecked: ``build`` judges them."""
    try:
        from django.conf import settings

        if not settings.configured:
            return {}, None
        return getattr(settings, "LOCKWATCH", None), getattr(settings, "BASE_DIR", None)
    except ImportError:
        return {}, None


def unknown_keys(user: Mapping[Any, Any]) -> list[Any]:
    # Keys may be anything hashable: sort by repr, so 1 and "X" can sit together.
    return sorted((k for k in user if k not in DEFAULTS), key=repr)


class _Checker:
    """Collects one problem per bad value instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, name: str, must: str, value: Any) -> None:
        self.problems.append(f"LOCKWATCH[{name!r}] must be {must}, got {_shown(value)}")

    def number(
        self,
        name: str,
        value: Any,
        *,
        minimum: float,
        maximum: float = math.inf,
        whole: bool = False,
        allow_none: bool = False,
    ) -> Any:
        if value is None and allow_none:
            return None
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                as_float = float(value)
            except OverflowError:  # an int past float's range
                as_float = math.inf
            # NaN fails every comparison, so it would pass a range test: ask isfinite.
            if math.isfinite(as_float) and (as_float.is_integer() or not whole):
                number = int(value) if whole else as_float
        top = min(maximum, _INT_MAX) if whole else maximum
        if number is None or not minimum <= number <= top:
            what = "a whole number" if whole else "a finite number"
            span = f">= {minimum:g}" if maximum == math.inf else f"from {minimum:g} to {maximum:g}"
            self.bad(name, f"{what} {span}{' or None' if allow_none else ''}", value)
            return None
        return number

    def flag(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            self.bad(name, "True or False", value)
            return False
        return value

    def path(self, name: str, value: Any) -> Path | None:
        """An absolute path from a str or path-like, or None after naming the problem."""
        try:
            text = os.fspath(value)
        except TypeError:
            text = None
        if not isinstance(text, str):
            self.bad(name, "a path (str or pathlib.Path)", value)
            return None
        try:
            return Path(text).expanduser().resolve()
        except (OSError, ValueError, RuntimeError) as exc:
            # An embedded NUL byte, ~unknownuser, a vanished working directory.
            self.problems.append(f"LOCKWATCH[{name!r}] is not a usable path ({exc}): {value!r}")
            return None

    def paths(self, name: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list | tuple):
            self.bad(name, "a list of path strings", value)
            return ()
        out = []
        for item in value:
            path = self.path(name, item)
            if path is not None:
                out.append(str(path))
        return tuple(out)


class _AlertsChecker(_Checker):
    """Names a bad value inside ALERTS by both keys, into the same list of problems."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems

    def bad(self, name: str, must: str, value: Any) -> None:
        self.problems.append(f"LOCKWATCH['ALERTS'][{name!r}] must be {must}, got {_shown(value)}")

    def url(self, name: str, value: Any) -> str | None:
        if value is None:
            return None
        try:
            parts = urlsplit(value) if isinstance(value, str) else None
            host = parts.hostname if parts is not None else None
        except ValueError:  # an unclosed [ in the host, a bad port
            parts = host = None
        if parts is None or parts.scheme not in ("http", "https") or not host:
            self.bad(name, "None or an http(s) URL", value)
            return None
        return str(value).rstrip("/")


def _alerts(c: _Checker, raw: Any) -> Alerts | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        c.bad("ALERTS", "None or a dict of alert rules", raw)
        return None
    for key in sorted((k for k in raw if k not in ALERT_DEFAULTS), key=repr):
        c.problems.append(
            f"LOCKWATCH['ALERTS'] has an unknown key {_shown(key)}; known keys: "
            + ", ".join(ALERT_DEFAULTS)
        )
    merged = {**ALERT_DEFAULTS, **{k: v for k, v in raw.items() if k in ALERT_DEFAULTS}}
    a = _AlertsChecker(c.problems)
    n = {name: a.number(name, merged[name], **spec) for name, spec in _ALERT_NUMBERS.items()}
    return Alerts(
        webhook=a.url("WEBHOOK", merged["WEBHOOK"]),
        dashboard_url=a.url("DASHBOARD_URL", merged["DASHBOARD_URL"]),
        busy_per_minute=n["BUSY_PER_MINUTE"],
        hold_seconds=n["HOLD_SECONDS"],
        wait_p95_seconds=n["WAIT_P95_SECONDS"],
        wait_window=n["WAIT_WINDOW"],
        cooldown=n["COOLDOWN"],
        interval=n["INTERVAL"],
        timeout=n["TIMEOUT"],
    )


def _shown(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a settings object with a broken __repr__ is still named by type
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else f"{text[:77]}..."


def _given(value: Any) -> bool:
    """False for None and "" (both mean the default), without comparing with ==."""
    return value is not None and not (isinstance(value, str) and not value)


def _base(base_dir: Any) -> Path | None:
    """BASE_DIR when it is a usable path; anything else is Django's business, not ours."""
    try:
        return Path(os.fspath(base_dir)) if base_dir else None
    except TypeError:
        return None


def build(user: Any, base_dir: Any = None) -> Config:
    """Validate a LOCKWATCH dict; raise ConfigError naming every bad value.

    Unknown keys are left to the system check (lockwatch.E002)."""
    if user is None:
        user = {}
    if not isinstance(user, Mapping):
        raise ConfigError(f"LOCKWATCH must be a dict, got {_shown(user)}")
    merged = {**DEFAULTS, **{k: v for k, v in user.items() if k in DEFAULTS}}
    c = _Checker()
    base = _base(base_dir)
    root: Path | None
    if _given(merged["PROJECT_ROOT"]):
        root = c.path("PROJECT_ROOT", merged["PROJECT_ROOT"])
    else:
        try:
            root = (base or Path(os.getcwd())).resolve()
        except OSError as exc:
            c.problems.append(f"the project root cannot be found ({exc}); set PROJECT_ROOT")
            root = None
    store: Path | None = None
    if _given(merged["STORE"]):
        store = c.path("STORE", merged["STORE"])
    elif os.environ.get("LOCKWATCH_STORE"):
        store = c.path("STORE", os.environ["LOCKWATCH_STORE"])
    elif root is not None:
        store = root / "lockwatch.sqlite3"
    raw_queries = merged["CAPTURE_QUERIES"]
    queries = raw_queries
    if isinstance(raw_queries, bool):
        queries = "all" if raw_queries else "none"
    elif not (isinstance(raw_queries, str) and raw_queries in ("all", "slow", "none")):
        c.bad("CAPTURE_QUERIES", "'all', 'slow' or 'none'", raw_queries)
    flags = {name: c.flag(name, merged[name]) for name in _FLAGS}
    numbers = {name: c.number(name, merged[name], **spec) for name, spec in _NUMBERS.items()}
    include = c.paths("CALL_SITE_INCLUDE", merged["CALL_SITE_INCLUDE"])
    exclude = c.paths("CALL_SITE_EXCLUDE", merged["CALL_SITE_EXCLUDE"])
    layer = merged["CHANNEL_LAYER"]
    if layer is not None and not (isinstance(layer, str) and layer):
        c.bad("CHANNEL_LAYER", "None or a channel layer alias", layer)
    access = merged["ACCESS_CHECK"]
    if not (isinstance(access, str) and "." in access.strip(".")):
        c.bad("ACCESS_CHECK", "a dotted path to a function, e.g. 'pkg.module.function'", access)
    alerts = _alerts(c, merged["ALERTS"])
    if c.problems or store is None or root is None:
        raise ConfigError(*c.problems)
    return Config(
        store=store,
        enabled=flags["ENABLED"],
        buffer_size=numbers["BUFFER_SIZE"],
        flush_interval=numbers["FLUSH_INTERVAL"],
        capture_queries=queries,
        slow_query=numbers["SLOW_QUERY_MS"] / 1000.0,
        capture_params=flags["CAPTURE_PARAMS"],
        hold_record=numbers["HOLD_RECORD_MS"] / 1000.0,
        sql_max_length=numbers["SQL_MAX_LENGTH"],
        params_max_length=numbers["PARAMS_MAX_LENGTH"],
        exact_waits=flags["EXACT_WAITS"],
        fast_handoff=flags["FAST_HANDOFF"],
        project_root=root,
        call_site_include=include,
        call_site_exclude=exclude,
        retention_max_age=numbers["RETENTION_MAX_AGE"],
        retention_max_rows=numbers["RETENTION_MAX_ROWS"],
        attribution_grace=numbers["ATTRIBUTION_GRACE"],
        channel_layer=layer,
        access_check=access,
        alerts=alerts,
    )


def _capture_off(base_dir: Any) -> Config:
    """The defaults with capture off: what a process runs with while a value is bad."""
    try:
        cfg = build({}, base_dir)
    except ConfigError:  # $LOCKWATCH_STORE or the working directory is unusable too
        cfg = build({"STORE": os.path.join(os.sep, "lockwatch.sqlite3"), "PROJECT_ROOT": os.sep})
    return dataclasses.replace(cfg, enabled=False)


@functools.cache
def get_config() -> Config:
    """The settings in force. Never raises: a bad value turns capture off, logged once
    here and named by the system checks."""
    user, base = _user_settings()
    try:
        return build(user, base)
    except ConfigError as exc:
        log.warning("lockwatch: capture is off until LOCKWATCH is fixed: %s", exc)
        return _capture_off(base)


def reset(**kwargs: Any) -> None:
    get_config.cache_clear()
