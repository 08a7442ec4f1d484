from __future__ import annotations

from django.apps import AppConfig
from django.core.signals import setting_changed


def _settings_changed(*, setting: str, **kwargs: object) -> None:
    if setting in ("LOCKWATCH", "BASE_DIR"):
        from lockwatch import conf
        from lockwatch.capture import callsite

        conf.reset()
        cfg = conf.get_config()  # never raises: a bad value turns capture off
        callsite.configure(str(cfg.project_root), cfg.call_site_include, cfg.call_site_exclude)


class LockwatchConfig(AppConfig):
    name = "lockwatch"
    verbose_name = "lockwatch"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from lockwatch import checks, conf  # noqa: F401  (checks registers itself)
        from lockwatch.capture import callsite, context

        setting_changed.connect(_settings_changed)
        context.install_command_hook()  # every management command tags its events
        # Never raises: a bad LOCKWATCH value turns capture off and the system checks
        # (lockwatch.E001-E003) name it, so django.setup() still succeeds.
        cfg = conf.get_config()
        callsite.configure(str(cfg.project_root), cfg.call_site_include, cfg.call_site_exclude)
