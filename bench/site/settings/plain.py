"""Plain ``django.db.backends.sqlite3``: the baseline."""

from .base import *  # noqa: F403
