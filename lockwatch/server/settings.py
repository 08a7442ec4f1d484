"""Settings of the standalone dashboard (``lockwatch serve``, the top-level manage.py).

No database: sessions are signed cookies and the dashboard reads the store
read-only. Access is one token, from ``LOCKWATCH_TOKEN`` or made up here; it is
put back in the environment so runserver's reloaded child keeps the same one.
The secret key derives from the token, so a login survives a restart exactly
when the token does.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

TOKEN = os.environ.get("LOCKWATCH_TOKEN", "").strip()
if not TOKEN:
    TOKEN = secrets.token_urlsafe(24)
    os.environ["LOCKWATCH_TOKEN"] = TOKEN
LOCKWATCH_DASHBOARD_TOKEN = TOKEN
SECRET_KEY = hashlib.sha256(f"lockwatch-server-secret:{TOKEN}".encode()).hexdigest()

DEBUG = os.environ.get("LOCKWATCH_DEBUG") == "1"
_host = os.environ.get("LOCKWATCH_HOST", "127.0.0.1")
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
if _host in ("0.0.0.0", "::", "*"):
    ALLOWED_HOSTS = ["*"]  # listening everywhere on purpose; the token still guards it
elif _host not in ALLOWED_HOSTS:
    ALLOWED_HOSTS.append(_host)

INSTALLED_APPS = [
    "daphne",  # first, so manage.py runserver is daphne's (ASGI, websockets)
    "django.contrib.staticfiles",
    "lockwatch",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "lockwatch.server.urls"
ASGI_APPLICATION = "lockwatch.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
DATABASES: dict[str, dict[str, str]] = {}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
# Own names: cookies are per host, not per port, so another app on localhost must not clash.
SESSION_COOKIE_NAME = "lockwatch_session"
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_NAME = "lockwatch_csrftoken"
CSRF_COOKIE_SAMESITE = "Strict"
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

STATIC_URL = "/static/"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

LOCKWATCH = {
    "STORE": os.environ.get("LOCKWATCH_STORE") or str(Path.cwd() / "lockwatch.sqlite3"),
    # This process only reads the store; it captures nothing of its own.
    "ENABLED": False,
    "EXACT_WAITS": False,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"lockwatch": {"handlers": ["console"], "level": "INFO"}},
}
