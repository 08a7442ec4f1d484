"""django-silk installed; the worker starts its collector per round, as its middleware does."""

from .base import *  # noqa: F403
from .base import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "silk"]
SILKY_PYTHON_PROFILER = False  # SQL recording only, not its cProfile mode
