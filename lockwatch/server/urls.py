from __future__ import annotations

from django.urls import include, path

from .. import metrics

urlpatterns = [
    # Prometheus: the bearer token or an allowed address (LOCKWATCH_METRICS_ALLOW).
    path("metrics", metrics.view, name="metrics"),
    path("", include("lockwatch.urls")),
]
