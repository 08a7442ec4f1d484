"""System checks for lockwatch's own configuration.

The doctor's checks on the watched databases' configuration build on these.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core import checks

from . import conf, handle


@checks.register("lockwatch")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    user = getattr(settings, "LOCKWATCH", {}) or {}
    if not isinstance(user, dict):
        return [checks.Error("LOCKWATCH must be a dict.", id="lockwatch.E001")]
    for key in conf.unknown_keys(user):
        near = [k for k in conf.DEFAULTS if k.replace("_", "") == key.upper().replace("_", "")]
        hint = f"Did you mean {near[0]!r}?" if near else f"Known keys: {', '.join(conf.DEFAULTS)}."
        messages.append(
            checks.Error(f"LOCKWATCH has an unknown key {key!r}.", hint=hint, id="lockwatch.E002")
        )
    try:
        cfg = conf.build(user, getattr(settings, "BASE_DIR", None))
    except conf.ConfigError as exc:
        messages.append(checks.Error(str(exc), id="lockwatch.E003"))
        return messages
    for alias, db in settings.DATABASES.items():
        if db.get("ENGINE") != "lockwatch.db.backends.sqlite3":
            continue
        name = str(db.get("NAME") or "")
        if name and os.path.realpath(name) == str(cfg.store):
            messages.append(
                checks.Error(
                    f"The lockwatch store is the watched database {alias!r}.",
                    hint="Set LOCKWATCH['STORE'] to a separate file.",
                    id="lockwatch.E004",
                )
            )
    if cfg.exact_waits and handle.api() is None:
        messages.append(
            checks.Warning(
                "lockwatch cannot install its busy handler; lock waits are inferred from timings.",
                hint=f"Reason: {handle.unavailable_reason()}. Events are marked "
                "capture_mode=inferred.",
                id="lockwatch.W001",
            )
        )
    return messages
