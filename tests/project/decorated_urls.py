"""URLs of the decorated views (tests/project/shop/decorated.py), for the call-site tests."""

from django.urls import path

from .shop import decorated

urlpatterns = [
    path("atomic/", decorated.atomic_view),
    path("csrf/", decorated.csrf_view),
    path("login/", decorated.login_view),
    path("class/", decorated.ItemView.as_view()),
    path("checkout/", decorated.checkout),
    path("refund/", decorated.refund),
]
