"""lockwatch with everything on: timing, call sites, the exact-wait handler."""

from .base import *  # noqa: F403
from .base import INSTALLED_APPS, databases

INSTALLED_APPS = [*INSTALLED_APPS, "lockwatch"]
DATABASES = databases("lockwatch.db.backends.sqlite3")
LOCKWATCH = {"STORE": os.environ.get("BENCH_STORE"), "CAPTURE_PARAMS": False}  # noqa: F405
