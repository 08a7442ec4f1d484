"""``ENGINE: "lockwatch.db.backends.sqlite3"``: Django's SQLite backend, instrumented."""

from django.db.backends.sqlite3 import base

from lockwatch.db.wrapper import LockwatchWrapperMixin


class DatabaseWrapper(LockwatchWrapperMixin, base.DatabaseWrapper):
    pass
