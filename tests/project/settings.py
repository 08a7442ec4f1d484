"""A small target project for lockwatch's tests: the way a user sets it up."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]  # the repository root
SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "lockwatch",
    "tests.project.shop.apps.ShopConfig",
]

MIDDLEWARE = [
    "lockwatch.middleware.LockwatchMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

ROOT_URLCONF = "tests.project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
STATIC_URL = "/static/"

_options = {"timeout": float(os.environ.get("LOCKWATCH_TEST_TIMEOUT", "5"))}
if os.environ.get("LOCKWATCH_TEST_MODE"):
    _options["transaction_mode"] = os.environ["LOCKWATCH_TEST_MODE"]

DATABASES = {
    "default": {
        "ENGINE": "lockwatch.db.backends.sqlite3",
        "NAME": os.environ.get("LOCKWATCH_TEST_DB", str(BASE_DIR / "tests" / "project.sqlite3")),
        "OPTIONS": _options,
        "TEST": {"NAME": os.environ.get("LOCKWATCH_TEST_DB_TEST")},
    }
}

LOCKWATCH = {
    "STORE": os.environ.get("LOCKWATCH_STORE", str(BASE_DIR / "tests" / "lockwatch.sqlite3")),
    "FLUSH_INTERVAL": float(os.environ.get("LW_FLUSH", "0.05")),
    "BUFFER_SIZE": 1_000_000,
    # The tests check what capture saw of each write: all stored, unless a test says.
    "HOLD_RECORD_MS": float(os.environ.get("LW_HOLD_RECORD_MS", "0")),
}

DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

if os.environ.get("LOCKWATCH_TEST_REDIS"):
    # As a target with channels-redis has it: the flusher then publishes live batches.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # Longer than channels-redis's 5 s blocking read (redis-py 8 defaults to 5 s).
            "CONFIG": {
                "hosts": [{"address": os.environ["LOCKWATCH_TEST_REDIS"], "socket_timeout": 30}]
            },
        }
    }
