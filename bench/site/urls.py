from __future__ import annotations

from django.urls import path

from bench.site.views import round_view

urlpatterns = [path("round/", round_view)]
