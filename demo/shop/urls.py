from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("create_user/", views.create_user, name="create_user"),
    path("checkout/", views.checkout, name="checkout"),
    path("visit/", views.visit, name="visit"),
    path("async/checkout/", views.async_checkout, name="async_checkout"),
    path("audit/", views.audit, name="audit"),
]
