"""Decorated views and a helper shared by views, for the call-site tests."""

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import JsonResponse
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from .models import Item


@transaction.atomic  # ATOMIC-VIEW
def atomic_view(request):
    Item.objects.create(name="atomic-view")  # ATOMIC-VIEW-WRITE
    return JsonResponse({"ok": True})


@csrf_exempt  # CSRF-VIEW
def csrf_view(request):
    Item.objects.count()
    Item.objects.create(name="csrf-view")
    return JsonResponse({"ok": True})


@login_required  # LOGIN-VIEW
def login_view(request):
    Item.objects.create(name="login-view")
    return JsonResponse({"ok": True})


class ItemView(View):
    def get(self, request):  # CLASS-VIEW
        Item.objects.create(name="class-view")
        return JsonResponse({"ok": True})


@transaction.atomic  # ATOMIC-FUNCTION
def atomic_function():
    Item.objects.create(name="atomic-function")  # ATOMIC-FUNCTION-WRITE


def charge(name):
    Item.objects.create(name=name)  # CHARGE-WRITE


def checkout(request):
    charge("checkout")  # CHECKOUT-CALL
    return JsonResponse({"ok": True})


def refund(request):
    charge("refund")  # REFUND-CALL
    return JsonResponse({"ok": True})
