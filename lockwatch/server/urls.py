from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import include, path

from lockwatch.server import alerts, metricsview


def metrics_view(request: HttpRequest) -> HttpResponseBase:
    """The store's figures, then this server's alert counters (when it runs alerts)."""
    response: HttpResponseBase = metricsview.view(request)
    if response.status_code == 200 and isinstance(response, HttpResponse):
        response.content = response.content + alerts.exposition()
    return response


urlpatterns = [
    # Prometheus: the bearer token or an allowed address (LOCKWATCH_METRICS_ALLOW).
    path("metrics", metrics_view, name="metrics"),
    path("", include("lockwatch.urls")),
]
