"""The demo shop: every classic "database is locked", with lockwatch set up as a user would.

Environment:
  DEMO_DB          the shop's SQLite file (default: .demo/demo.sqlite3 at the repository root)
  LOCKWATCH_STORE  where lockwatch writes its events (default: .demo/lockwatch.sqlite3)
  DEMO_FIXED=1     apply the doctor's advice: WAL and BEGIN IMMEDIATE here, and the slow
                   work moved out of the transactions in shop/views.py and in the restock
                   command.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent  # demo/: call sites read shop/views.py:NN
STATE_DIR = BASE_DIR.parent / ".demo"

SECRET_KEY = "demo-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True

DEMO_FIXED = os.environ.get("DEMO_FIXED") == "1"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "lockwatch",
    "shop",
]

MIDDLEWARE = [
    # First, so every query of the request carries the request's name.
    "lockwatch.middleware.LockwatchMiddleware",
]

ROOT_URLCONF = "demoproject.urls"
WSGI_APPLICATION = "demoproject.wsgi.application"

_options: dict[str, object] = {"timeout": 5}  # Django's default busy timeout, spelled out
if DEMO_FIXED:
    # Take the write lock at BEGIN: a transaction that reads then writes then waits for
    # the lock in the busy handler, instead of failing at once with an upgrade error.
    _options["transaction_mode"] = "IMMEDIATE"
    # WAL: readers no longer block a COMMIT. The mode persists in the file; the first
    # connection switches it (scripts/demo.sh runs migrate first, before any load).
    # synchronous=NORMAL is safe under WAL and saves an fsync per commit.
    _options["init_command"] = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"

DATABASES = {
    "default": {
        "ENGINE": "lockwatch.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DB", str(STATE_DIR / "demo.sqlite3")),
        "OPTIONS": _options,
    }
}

LOCKWATCH = {
    "STORE": os.environ.get("LOCKWATCH_STORE", str(STATE_DIR / "lockwatch.sqlite3")),
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
