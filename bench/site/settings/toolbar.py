"""django-debug-toolbar installed; the worker turns its SQL panel on per round."""

from .base import *  # noqa: F403
from .base import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "django.contrib.staticfiles", "debug_toolbar"]
STATIC_URL = "/static/"
