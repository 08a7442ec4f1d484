"""What every alternative shares: same file layout, journal, timeout and apps."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[3]  # the repository root
SECRET_KEY = "bench-only-not-secret"
DEBUG = False  # DEBUG=True would add Django's own queries_log to every alternative
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "bench.site.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "bench.site.apps.BenchSiteConfig",
]

# A typical project's middleware, so the view runs as deep in the stack as a real one.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ENGINE = "django.db.backends.sqlite3"


def databases(engine: str) -> dict:
    # WAL and synchronous=NORMAL for every alternative: the common production setup, and
    # it keeps fsync noise from drowning the per-statement differences.
    return {
        "default": {
            "ENGINE": engine,
            "NAME": os.environ.get("BENCH_DB", str(BASE_DIR / "bench" / "bench.sqlite3")),
            "OPTIONS": {"timeout": 5.0, "init_command": "PRAGMA synchronous=NORMAL"},
        }
    }


DATABASES = databases(ENGINE)
