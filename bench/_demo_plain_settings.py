"""The demo shop without lockwatch: Django's own backend, no app, no middleware.

Benchmark 2 (``bench/load.py``) serves the demo with this module as
DJANGO_SETTINGS_MODULE (the repository root and demo/ on PYTHONPATH), so the
only difference from ``demoproject.settings`` is lockwatch itself.
"""

from __future__ import annotations

from demoproject.settings import *  # noqa: F403
from demoproject.settings import DATABASES, INSTALLED_APPS, MIDDLEWARE
from shop.apps import ShopConfig


class PlainShopConfig(ShopConfig):
    """The shop without its ``ready()``: that calls ``lockwatch.instrument_sqlite3()``,
    which would capture Django's own sqlite3 connections here too."""

    def ready(self) -> None:
        pass


DATABASES = {"default": {**DATABASES["default"], "ENGINE": "django.db.backends.sqlite3"}}
INSTALLED_APPS = [
    "bench._demo_plain_settings.PlainShopConfig" if app == "shop" else app
    for app in INSTALLED_APPS
    if app != "lockwatch"
]
MIDDLEWARE = [m for m in MIDDLEWARE if not m.startswith("lockwatch.")]
