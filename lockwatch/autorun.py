"""Inside a process that ``lockwatch run`` started: instrument the project's settings in
memory, before its apps load, as README's install would in settings.py.

``hook`` wraps ``LazySettings._setup`` (a settings module) and ``configure`` (settings
made in code); the change is made on the settings object, never in a file. Nothing here
may stop the program: a failure leaves the settings as they were, with one warning.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

SQLITE = "django.db.backends.sqlite3"
ENGINE = "lockwatch.db.backends.sqlite3"
MIDDLEWARE = "lockwatch.middleware.LockwatchMiddleware"
APP = "lockwatch"

Warn = Callable[[str, str], None]


def hook(conf_module: ModuleType, warn: Warn) -> None:
    """Wrap django.conf's LazySettings so that its settings are instrumented once made."""
    lazy = conf_module.LazySettings
    if getattr(lazy, "_lockwatch_autorun", False):
        return
    setup, configure = lazy._setup, lazy.configure

    def _setup(self: Any, *args: Any, **kwargs: Any) -> None:
        setup(self, *args, **kwargs)
        _instrument(self._wrapped, warn)

    def _configure(self: Any, *args: Any, **kwargs: Any) -> None:
        configure(self, *args, **kwargs)
        _instrument(self._wrapped, warn)

    lazy._setup, lazy.configure = _setup, _configure
    lazy._lockwatch_autorun = True


def _instrument(holder: Any, warn: Warn) -> None:
    try:
        changes, notes = changed(holder)
    except Exception as exc:
        warn("failed", f"lockwatch could not instrument this process ({exc!r}); it runs without it")
        return
    for key, message in notes:
        warn(key, message)
    for name, value in changes.items():  # computed first: all or nothing
        setattr(holder, name, value)


def changed(holder: Any) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The settings to replace, and warnings to give: DATABASES with Django's SQLite
    backend swapped for lockwatch's, lockwatch in INSTALLED_APPS, its middleware first,
    and LOCKWATCH["STORE"] from ``lockwatch run --store``."""
    notes: list[tuple[str, str]] = []
    databases = dict(holder.DATABASES)
    watched = False
    for alias, db in databases.items():
        engine = db.get("ENGINE") if isinstance(db, Mapping) else None
        if engine == SQLITE:
            databases[alias] = {**db, "ENGINE": ENGINE}
            watched = True
        elif engine == ENGINE:
            watched = True
        elif not isinstance(engine, str):
            continue
        elif (kind := _backend_kind(engine)) == "lockwatch":
            watched = True  # the project's own backend, with lockwatch's mixin in it
        elif kind == "sqlite":
            notes.append((
                f"engine:{engine}",
                f"DATABASES[{alias!r}] uses {engine}, a subclass of Django's SQLite backend,"
                " which lockwatch run cannot swap: that database is not watched (see README,"
                " 'Instrument without editing settings')",
            ))  # fmt: skip
    if not watched:
        if not notes:
            notes.append(("none", "no database uses Django's SQLite backend: nothing to watch"))
        return {}, notes
    changes: dict[str, Any] = {"DATABASES": databases}
    apps = holder.INSTALLED_APPS
    if not any(a == APP or str(a).startswith(f"{APP}.apps.") for a in apps):
        changes["INSTALLED_APPS"] = type(apps)([*apps, APP])
    middleware = getattr(holder, "MIDDLEWARE", None)
    if isinstance(middleware, list | tuple) and MIDDLEWARE not in middleware:
        changes["MIDDLEWARE"] = type(middleware)([MIDDLEWARE, *middleware])
    store = os.environ.get("LOCKWATCH_RUN_STORE")
    if store:
        user = getattr(holder, "LOCKWATCH", None)
        if user is None or isinstance(user, Mapping):
            changes["LOCKWATCH"] = {**(user or {}), "STORE": store}
    return changes, notes


def _backend_kind(engine: str) -> str | None:
    """ "lockwatch" when ENGINE's DatabaseWrapper has lockwatch's mixin, "sqlite" when it
    is Django's SQLite one subclassed without it, else None (also when it cannot be
    imported: Django will say why). Imported as Django will import it."""
    try:
        from django.db.backends.sqlite3.base import DatabaseWrapper

        wrapper = importlib.import_module(f"{engine}.base").DatabaseWrapper
        if any(
            c.__name__ == "LockwatchWrapperMixin" and c.__module__ == "lockwatch.db.wrapper"
            for c in wrapper.__mro__
        ):
            return "lockwatch"
        return "sqlite" if issubclass(wrapper, DatabaseWrapper) else None
    except Exception:
        return None
