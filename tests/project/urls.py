from django.urls import include, path

from .shop import views

urlpatterns = [
    path("lockwatch/", include("lockwatch.urls")),
    path("write/", views.write, name="write"),
    path("write-async/", views.write_async, name="write-async"),
    path("read-then-write/", views.read_then_write, name="read-then-write"),
    path("hold/", views.hold, name="hold"),
    path("read-txn/", views.read_txn, name="read-txn"),
    path("upgrade/", views.upgrade, name="upgrade"),
    path("decorated/", views.decorated, name="decorated"),
]
