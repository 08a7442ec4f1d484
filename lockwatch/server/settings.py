"""Settings of the standalone dashboard (``lockwatch serve``, the top-level manage.py).

No database: the dashboard reads the store read-only. Access is one token, from
``LOCKWATCH_TOKEN`` or made up here; it is put back in the environment so
runserver's reloaded child keeps the same one.

A login is a session kept in a file under the state directory
(``LOCKWATCH_STATE_DIR``, else ``$XDG_STATE_HOME/lockwatch/dashboard``, else
``~/.local/state/lockwatch/dashboard``; mode 0700), with a random secret key kept
there too: the cookie is a random key, logging out deletes the session, and a
login survives a restart while the token and the state directory stay the same.

Behind a proxy (``lockwatch serve --proxy-headers [--public-url URL]``):
``LOCKWATCH_PROXY_HEADERS=1`` trusts its ``X-Forwarded-Proto``, and
``LOCKWATCH_PUBLIC_URL`` is the address users open (an allowed host, and a
trusted origin for the login form and the websocket).

``/metrics`` (Prometheus) takes the token as a bearer token, or a scrape from an
address in ``LOCKWATCH_METRICS_ALLOW`` (``lockwatch serve --metrics-allow``).
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

TOKEN = os.environ.get("LOCKWATCH_TOKEN", "").strip()
if not TOKEN:
    TOKEN = secrets.token_urlsafe(24)
    os.environ["LOCKWATCH_TOKEN"] = TOKEN
LOCKWATCH_DASHBOARD_TOKEN = TOKEN


def _state_dir() -> Path:
    if os.environ.get("LOCKWATCH_STATE_DIR"):
        return Path(os.environ["LOCKWATCH_STATE_DIR"]).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "lockwatch" / "dashboard"


def _private(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def _secret(state: Path) -> str:
    """The state directory's secret key, made on first use (written whole, then linked in,
    so a second process starting at once reads it complete)."""
    path = state / "secret_key"
    if not path.exists():
        fd, temporary = tempfile.mkstemp(dir=state, prefix=".secret-")  # mode 0600
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process was first: use its key
        finally:
            os.unlink(temporary)
    return path.read_text().strip()


try:
    STATE_DIR = _private(_state_dir())
    SECRET_KEY = _secret(STATE_DIR)
    SESSION_FILE_PATH = str(_private(STATE_DIR / "sessions"))
except OSError as exc:
    # Somewhere to keep logins until the server stops.
    print(
        f"lockwatch: cannot keep logins in {_state_dir()} ({exc}); set LOCKWATCH_STATE_DIR."
        " Logins end when this server stops.",
        file=sys.stderr,
    )
    STATE_DIR = Path(tempfile.mkdtemp(prefix="lockwatch-dashboard-"))
    SECRET_KEY = _secret(STATE_DIR)
    SESSION_FILE_PATH = str(_private(STATE_DIR / "sessions"))

DEBUG = os.environ.get("LOCKWATCH_DEBUG") == "1"
_host = os.environ.get("LOCKWATCH_HOST", "127.0.0.1")
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
if _host in ("0.0.0.0", "::", "*"):
    ALLOWED_HOSTS = ["*"]  # listening everywhere on purpose; the token still guards it
elif _host not in ALLOWED_HOSTS:
    ALLOWED_HOSTS.append(_host)

# Behind a TLS-terminating proxy: its X-Forwarded-Proto says whether the browser used
# https (daphne --proxy-headers also takes the client's address from X-Forwarded-For).
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https")
    if os.environ.get("LOCKWATCH_PROXY_HEADERS") == "1"
    else None
)
# Prometheus scrapes of /metrics let in without the token, by client address:
# comma-separated addresses or networks (lockwatch serve --metrics-allow).
_allow = os.environ.get("LOCKWATCH_METRICS_ALLOW", "")
LOCKWATCH_METRICS_ALLOW = [item.strip() for item in _allow.split(",") if item.strip()]
# How many call sites /metrics labels (lockwatch serve --metrics-call-sites; 0: none).
LOCKWATCH_METRICS_CALL_SITES = int(os.environ.get("LOCKWATCH_METRICS_CALL_SITES") or 0)
CSRF_TRUSTED_ORIGINS: list[str] = []
_public = urlsplit(os.environ.get("LOCKWATCH_PUBLIC_URL", "").strip())
if _public.scheme and _public.hostname:
    CSRF_TRUSTED_ORIGINS.append(f"{_public.scheme}://{_public.netloc}")
    if ALLOWED_HOSTS != ["*"]:
        ALLOWED_HOSTS.append(_public.hostname)

INSTALLED_APPS = [
    "daphne",  # first, so manage.py runserver is daphne's (ASGI, websockets)
    "django.contrib.staticfiles",
    "lockwatch",
]
MIDDLEWARE = [
    "lockwatch.server.middleware.SecureCookies",  # first: its response side runs last
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "lockwatch.server.urls"
ASGI_APPLICATION = "lockwatch.server.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
DATABASES: dict[str, dict[str, str]] = {}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

SESSION_ENGINE = "django.contrib.sessions.backends.file"
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
    # Not propagated: daphne's root handler would print each line a second time.
    "loggers": {"lockwatch": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}
