from __future__ import annotations

from django.apps import AppConfig


class BenchSiteConfig(AppConfig):
    name = "bench.site"
    label = "benchsite"
    default_auto_field = "django.db.models.AutoField"
