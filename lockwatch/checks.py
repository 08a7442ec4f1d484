"""System checks.

lockwatch's own configuration on every command (a bad value is an error); the watched
databases' concurrency advice only under ``manage.py check --deploy`` and in
``lockwatch doctor --settings``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core import checks

from lockwatch import conf, paths
from lockwatch.capture import busyhandler


@checks.register("lockwatch")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """lockwatch's own configuration: shown on every command, as configuration errors are.

    A bad value is an Error (capture is off until it is fixed); an unwritable store only
    a Warning, so that ``migrate`` still runs on a read-only filesystem."""
    messages: list[checks.CheckMessage] = []
    user = getattr(settings, "LOCKWATCH", None)
    if user is None:
        user = {}
    if not isinstance(user, Mapping):
        return [
            checks.Error(
                f"LOCKWATCH must be a dict, got {type(user).__name__}.",
                hint='For example LOCKWATCH = {"STORE": BASE_DIR / "lockwatch.sqlite3"}. '
                "lockwatch captures nothing until this is fixed.",
                id="lockwatch.E001",
            )
        ]
    for key in conf.unknown_keys(user):
        spelled = str(key).upper().replace("_", "")
        near = [k for k in conf.DEFAULTS if k.replace("_", "") == spelled]
        hint = f"Did you mean {near[0]!r}?" if near else f"Known keys: {', '.join(conf.DEFAULTS)}."
        messages.append(
            checks.Error(f"LOCKWATCH has an unknown key {key!r}.", hint=hint, id="lockwatch.E002")
        )
    try:
        cfg = conf.build(user, getattr(settings, "BASE_DIR", None))
    except conf.ConfigError as exc:
        for problem in exc.problems:
            messages.append(
                checks.Error(
                    f"{problem}.",
                    hint="lockwatch captures nothing until this is fixed.",
                    id="lockwatch.E003",
                )
            )
        return messages
    for alias, db in settings.DATABASES.items():
        if db.get("ENGINE") != "lockwatch.db.backends.sqlite3":
            continue
        name = db.get("NAME") or ""
        # As Django opens it (always uri=True): a file: URI names the file it opens.
        if name and paths.database(name, uri=True) == paths.database(cfg.store):
            messages.append(
                checks.Error(
                    f"The lockwatch store is the watched database {alias!r}.",
                    hint="Set LOCKWATCH['STORE'] to a separate file.",
                    id="lockwatch.E004",
                )
            )
    messages += _check_store(cfg)
    if cfg.exact_waits and busyhandler.api() is None:
        messages.append(
            checks.Warning(
                "lockwatch cannot install its busy handler; lock waits are inferred from timings.",
                hint=f"Reason: {busyhandler.unavailable_reason()}. Events are marked "
                "capture_mode=inferred.",
                id="lockwatch.W001",
            )
        )
    return messages


def _check_store(cfg: conf.Config) -> list[checks.CheckMessage]:
    # A Warning, not an Error: a monitoring add-on must not stop migrate or runserver
    # (a read-only container filesystem is the usual case). Capture runs on and counts
    # what it cannot store.
    # os.path, not Path: Path.exists() raises PermissionError under an unreadable folder.
    folder = cfg.store.parent
    target = cfg.store if os.path.exists(cfg.store) else folder
    if os.path.isdir(folder) and os.access(target, os.W_OK):
        return []
    return [
        checks.Warning(
            f"The lockwatch store {cfg.store} cannot be written: its events are lost.",
            hint="Point LOCKWATCH['STORE'] (or $LOCKWATCH_STORE) at a file in a writable "
            "folder. The app runs as before; lockwatch counts what it loses.",
            id="lockwatch.W005",
        )
    ]


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

    from lockwatch.plainsqlite import connect as original_connect

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


# Not tagged "database": Django 6 runs such checks only with --database, and this advice
# belongs in a plain check --deploy. It reads each file's journal mode read-only.
@checks.register("lockwatch", deploy=True)
def check_databases(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The doctor's configuration advice for each SQLite database.

    Advice about concurrency, not a configuration error: shown by ``check --deploy`` (as
    Django's own production advice is) and ``lockwatch doctor --settings``, not on every
    command."""
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
        try:
            timeout = float(options.get("timeout", 5.0))
        except (TypeError, ValueError):
            timeout = 5.0  # Django's own connection code reports a bad timeout
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
                    "commit waits for an fsync of the WAL. With synchronous=NORMAL the database "
                    "stays consistent, and an application crash loses nothing, but a power loss "
                    "or an operating-system crash can lose the last commits.",
                    hint='If losing the last commits on a power loss is acceptable, add "PRAGMA '
                    'synchronous=NORMAL" to OPTIONS["init_command"].',
                    id="lockwatch.I015",
                )
            )
    return out
