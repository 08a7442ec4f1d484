"""lockwatch run's change to the settings, in this process: what is added, what is left
alone, and that a failure changes nothing."""

from __future__ import annotations

from pathlib import Path

from lockwatch import autorun


def test_a_failing_change_leaves_the_settings_as_they_were():
    class Holder:
        DATABASES = {"default": {"ENGINE": autorun.SQLITE, "NAME": "x"}}
        INSTALLED_APPS = 7  # not a list: the change fails half-way
        MIDDLEWARE = ["a"]

    said: list[tuple[str, str]] = []
    holder = Holder()
    autorun._instrument(holder, lambda key, message: said.append((key, message)))
    assert holder.DATABASES["default"]["ENGINE"] == autorun.SQLITE
    assert holder.MIDDLEWARE == ["a"]
    assert [key for key, _ in said] == ["failed"]


def test_own_backends_are_judged_by_their_classes(tmp_path: Path, monkeypatch):
    """A subclass of Django's SQLite backend is left alone with a warning; one that puts
    lockwatch's mixin first (README's fix) counts as watched, so the app and middleware
    are added."""
    for name, bases in (("plainown", "base.DatabaseWrapper"),
                        ("mixedown", "LockwatchWrapperMixin, base.DatabaseWrapper")):  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
        (tmp_path / name / "base.py").write_text(
            "from django.db.backends.sqlite3 import base\n"
            "from lockwatch.db.wrapper import LockwatchWrapperMixin\n\n\n"
            f"class DatabaseWrapper({bases}):\n    pass\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))

    class Holder:
        INSTALLED_APPS = ["django.contrib.auth"]
        MIDDLEWARE: list[str] = []
        LOCKWATCH = None

    Holder.DATABASES = {"default": {"ENGINE": "plainown", "NAME": "x"}}
    changes, notes = autorun.changed(Holder())
    assert changes == {} and [key for key, _ in notes] == ["engine:plainown"]

    Holder.DATABASES = {"default": {"ENGINE": "mixedown", "NAME": "x"}}
    changes, notes = autorun.changed(Holder())
    assert notes == []
    assert changes["DATABASES"] == Holder.DATABASES  # kept: it is lockwatch's already
    assert changes["INSTALLED_APPS"] == ["django.contrib.auth", "lockwatch"]
    assert changes["MIDDLEWARE"] == [autorun.MIDDLEWARE]


def test_what_the_project_already_has_is_not_added_twice():
    class Holder:
        DATABASES = {"default": {"ENGINE": autorun.ENGINE, "NAME": "x"}}
        INSTALLED_APPS = ("django.contrib.auth", "lockwatch.apps.LockwatchConfig")
        MIDDLEWARE = ("x.Middleware", autorun.MIDDLEWARE)
        LOCKWATCH = {"STORE": "/elsewhere.sqlite3", "FLUSH_INTERVAL": 0.5}

    changes, notes = autorun.changed(Holder())
    assert notes == [] and changes == {"DATABASES": Holder.DATABASES}
