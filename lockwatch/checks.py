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


def _pragma_in(init_command: str, name: str) -> str | None:
    """The value a ``PRAGMA name = value`` in init_command sets, if any."""
    value = None
    for part in init_command.split(";"):
        words = part.replace("=", " = ").split()
        if len(words) >= 4 and words[0].upper() == "PRAGMA" and words[1].lower() == name:
            value = words[3].strip("'\"").upper()
    return value


def _journal_mode(path: str) -> str | None:
    """Read the file's journal mode without writing to it (and without capture)."""
    import sqlite3
    from pathlib import Path

    from .rawsqlite import original_connect

    if not path or path == ":memory:" or "mode=memory" in path or not os.path.exists(path):
        return None
    try:
        conn = original_connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
        try:
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).upper()
        finally:
            conn.close()
    except sqlite3.Error:
        return None


MIN_TIMEOUT = 2.0


@checks.register("lockwatch", checks.Tags.database)
def check_databases(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The doctor's configuration checks, for each watched SQLite database."""
    out: list[checks.CheckMessage] = []
    for alias, db in settings.DATABASES.items():
        if db.get("ENGINE") not in ("lockwatch.db.backends.sqlite3", "django.db.backends.sqlite3"):
            continue
        options = db.get("OPTIONS", {}) or {}
        init = str(options.get("init_command", ""))
        name = str(db.get("NAME") or "")
        where = f"DATABASES[{alias!r}]"
        journal = _pragma_in(init, "journal_mode") or _journal_mode(name)
        if journal is not None and journal != "WAL":
            out.append(
                checks.Warning(
                    f"{where} uses journal_mode={journal}: every COMMIT waits for readers.",
                    hint='Add "init_command": "PRAGMA journal_mode=WAL" to OPTIONS (it persists '
                    "in the file).",
                    id="lockwatch.W010",
                )
            )
        timeout = float(options.get("timeout", 5.0))
        replaced = _pragma_in(init, "busy_timeout")
        if replaced is not None:
            out.append(
                checks.Warning(
                    f"{where}: init_command sets busy_timeout={replaced}, replacing "
                    f"OPTIONS['timeout']={timeout:g}.",
                    hint="Set the timeout in one place: OPTIONS['timeout'] (seconds).",
                    id="lockwatch.W011",
                )
            )
        elif timeout < MIN_TIMEOUT:
            out.append(
                checks.Warning(
                    f"{where} has a busy timeout of {timeout:g} s; writers give up quickly.",
                    hint=f'Set OPTIONS["timeout"] to at least {MIN_TIMEOUT:g} (Django\'s '
                    "default is 5).",
                    id="lockwatch.W012",
                )
            )
        mode = str(options.get("transaction_mode") or "DEFERRED").upper()
        if mode != "IMMEDIATE":
            out.append(
                checks.Warning(
                    f"{where} starts transactions as {mode}: a transaction that reads and then "
                    "writes fails at once with 'database is locked' when another writer is busy.",
                    hint='Set OPTIONS["transaction_mode"] = "IMMEDIATE" (Django 5.1+).',
                    id="lockwatch.W013",
                )
            )
            if db.get("ATOMIC_REQUESTS"):
                out.append(
                    checks.Warning(
                        f"{where} has ATOMIC_REQUESTS with {mode} transactions: every view that "
                        "reads before it writes can fail under concurrency.",
                        hint='Set OPTIONS["transaction_mode"] = "IMMEDIATE".',
                        id="lockwatch.W014",
                    )
                )
        sync = _pragma_in(init, "synchronous")
        if journal == "WAL" and (sync is None or sync in ("FULL", "2", "EXTRA", "3")):
            out.append(
                checks.Info(
                    f"{where} runs WAL with synchronous={sync or 'FULL (the default)'}: each "
                    "commit waits for an fsync it does not need for durability against crashes.",
                    hint='Add "PRAGMA synchronous=NORMAL" to OPTIONS["init_command"].',
                    id="lockwatch.I015",
                )
            )
    out += _check_store()
    return out


def _check_store() -> list[checks.CheckMessage]:
    try:
        cfg = conf.get_config()
    except conf.ConfigError:
        return []  # check_settings reports it
    folder = cfg.store.parent
    target = cfg.store if cfg.store.exists() else folder
    if not folder.is_dir() or not os.access(target, os.W_OK):
        return [
            checks.Error(
                f"The lockwatch store {cfg.store} cannot be written.",
                hint="Point LOCKWATCH['STORE'] at a writable folder. Capture keeps running and "
                "counts what it loses meanwhile.",
                id="lockwatch.E005",
            )
        ]
    return []
