from __future__ import annotations

from django.apps import AppConfig
from django.core.signals import setting_changed


def _settings_changed(*, setting: str, **kwargs: object) -> None:
    if setting in ("LOCKWATCH", "BASE_DIR"):
        from . import callsite, conf

        conf.reset()
        try:
            cfg = conf.get_config()
        except conf.ConfigError:
            return
        callsite.configure(str(cfg.project_root), cfg.call_site_include, cfg.call_site_exclude)


class LockwatchConfig(AppConfig):
    name = "lockwatch"
    verbose_name = "lockwatch"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import callsite, checks, conf  # noqa: F401  (checks registers itself)

        setting_changed.connect(_settings_changed)
        try:
            cfg = conf.get_config()
        except conf.ConfigError:
            return  # the system check reports it
        callsite.configure(str(cfg.project_root), cfg.call_site_include, cfg.call_site_exclude)
