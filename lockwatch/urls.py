"""The dashboard's URLs: ``path("lockwatch/", include("lockwatch.urls"))``.

Its websocket is at the same prefix plus ``ws/`` (see lockwatch.dashboard.routing).
"""

from __future__ import annotations

from django.urls import path

from lockwatch.dashboard import breakdown, views

app_name = "lockwatch"

urlpatterns = [
    path("", views.index, name="index"),
    path("events/<int:event_id>/", views.event_detail, name="event"),
    path("events/<int:event_id>/request/", breakdown.request_of_event, name="event-request"),
    path("requests/<str:request_id>/", breakdown.request_by_id, name="request"),
    path("export.csv", views.export_csv, name="export"),
    path("login/", views.login, name="login"),
    path("logout/", views.logout, name="logout"),
    path("partials/header/", views.header, name="header"),
    path("partials/chart/<slug:name>/", views.chart, name="chart"),
    path("partials/slowest/", views.slowest, name="slowest"),
    path("partials/callsites/", views.callsites, name="callsites"),
    path("partials/endpoints/", breakdown.endpoints_panel, name="endpoints"),
    path("partials/doctor/", views.doctor_panel, name="doctor"),
    path("partials/events/", views.events_table, name="events"),
]
