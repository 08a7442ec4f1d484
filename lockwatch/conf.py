"""Settings: one defaults dict, read once, cleared when Django's settings change."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    # Where events go: a separate SQLite file, never the watched database.
    # None means <BASE_DIR or cwd>/lockwatch.sqlite3, or $LOCKWATCH_STORE.
    "STORE": None,
    "ENABLED": True,
    # Events held in memory between flushes; past this they are dropped and counted.
    "BUFFER_SIZE": 20_000,
    "FLUSH_INTERVAL": 0.1,
    # Which statements become query events: "all", "slow" (slower than
    # SLOW_QUERY_MS, or that waited or failed) or "none". Autocommit writes are
    # always recorded (they hold the lock), and so are waits, busy errors and
    # transactions; every statement is counted in its request's totals.
    "CAPTURE_QUERIES": "slow",
    "SLOW_QUERY_MS": 100,
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
    # How long a wait may stay unattributed while other processes flush.
    "ATTRIBUTION_GRACE": 3.0,
    # A channel layer alias to publish batches to (see the dashboard).
    "CHANNEL_LAYER": None,
    # Dashboard access when mounted in a project: a dotted path to f(user) -> bool.
    "ACCESS_CHECK": "lockwatch.access.is_staff",
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


class ConfigError(ValueError):
    pass


def _user_settings() -> tuple[dict[str, Any], Path | None]:
    try:
        from django.conf import settings

        if not settings.configured:
            return {}, None
        user = getattr(settings, "LOCKWATCH", {}) or {}
        base = getattr(settings, "BASE_DIR", None)
        return dict(user), Path(base) if base else None
    except ImportError:
        return {}, None


def unknown_keys(user: dict[str, Any]) -> list[str]:
    return sorted(set(user) - DEFAULTS.keys())


def _number(name: str, value: Any, *, minimum: float, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ConfigError(f"LOCKWATCH[{name!r}] must be a number >= {minimum}, got {value!r}")
    return value


def build(user: dict[str, Any], base_dir: Path | None = None) -> Config:
    """Validate a LOCKWATCH dict. Unknown keys are left to the system check."""
    merged = {**DEFAULTS, **{k: v for k, v in user.items() if k in DEFAULTS}}
    root = Path(merged["PROJECT_ROOT"] or base_dir or os.getcwd()).resolve()
    store = merged["STORE"] or os.environ.get("LOCKWATCH_STORE") or root / "lockwatch.sqlite3"
    for name in ("CALL_SITE_INCLUDE", "CALL_SITE_EXCLUDE"):
        if isinstance(merged[name], str) or not all(isinstance(p, str) for p in merged[name]):
            raise ConfigError(f"LOCKWATCH[{name!r}] must be a list of path strings")
    queries = {True: "all", False: "none"}.get(merged["CAPTURE_QUERIES"], merged["CAPTURE_QUERIES"])
    if queries not in ("all", "slow", "none"):
        raise ConfigError(
            f"LOCKWATCH['CAPTURE_QUERIES'] must be 'all', 'slow' or 'none', got "
            f"{merged['CAPTURE_QUERIES']!r}"
        )
    for name in ("ENABLED", "CAPTURE_PARAMS", "EXACT_WAITS", "FAST_HANDOFF"):
        if not isinstance(merged[name], bool):
            raise ConfigError(f"LOCKWATCH[{name!r}] must be True or False, got {merged[name]!r}")
    return Config(
        store=Path(store).expanduser().resolve(),
        enabled=merged["ENABLED"],
        buffer_size=int(_number("BUFFER_SIZE", merged["BUFFER_SIZE"], minimum=1)),
        flush_interval=float(_number("FLUSH_INTERVAL", merged["FLUSH_INTERVAL"], minimum=0.001)),
        capture_queries=queries,
        slow_query=float(_number("SLOW_QUERY_MS", merged["SLOW_QUERY_MS"], minimum=0)) / 1000.0,
        capture_params=merged["CAPTURE_PARAMS"],
        sql_max_length=int(_number("SQL_MAX_LENGTH", merged["SQL_MAX_LENGTH"], minimum=16)),
        params_max_length=int(
            _number("PARAMS_MAX_LENGTH", merged["PARAMS_MAX_LENGTH"], minimum=16)
        ),
        exact_waits=merged["EXACT_WAITS"],
        fast_handoff=merged["FAST_HANDOFF"],
        project_root=root,
        call_site_include=tuple(str(Path(p).resolve()) for p in merged["CALL_SITE_INCLUDE"]),
        call_site_exclude=tuple(str(Path(p).resolve()) for p in merged["CALL_SITE_EXCLUDE"]),
        retention_max_age=_number(
            "RETENTION_MAX_AGE", merged["RETENTION_MAX_AGE"], minimum=1, allow_none=True
        ),
        retention_max_rows=_number(
            "RETENTION_MAX_ROWS", merged["RETENTION_MAX_ROWS"], minimum=1, allow_none=True
        ),
        attribution_grace=float(
            _number("ATTRIBUTION_GRACE", merged["ATTRIBUTION_GRACE"], minimum=0)
        ),
        channel_layer=merged["CHANNEL_LAYER"],
        access_check=str(merged["ACCESS_CHECK"]),
    )


@functools.cache
def get_config() -> Config:
    user, base = _user_settings()
    return build(user, base)


def reset(**kwargs: Any) -> None:
    get_config.cache_clear()
