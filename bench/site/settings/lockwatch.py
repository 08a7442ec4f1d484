"""lockwatch with its defaults, everything on: timing, call sites, the exact-wait handler,
and the request context bound by its middleware."""

import os

from .base import *  # noqa: F403
from .base import INSTALLED_APPS, MIDDLEWARE, databases

INSTALLED_APPS = [*INSTALLED_APPS, "lockwatch"]
MIDDLEWARE = ["lockwatch.middleware.LockwatchMiddleware", *MIDDLEWARE]
DATABASES = databases("lockwatch.db.backends.sqlite3")
LOCKWATCH = {"STORE": os.environ.get("BENCH_STORE")}
