import time

from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import JsonResponse

from .models import Item


def write(request):
    Item.objects.create(name="sync")  # SYNC-VIEW-LINE
    return JsonResponse({"ok": True})


def _create():
    Item.objects.create(name="async")  # ASYNC-VIEW-LINE


async def write_async(request):
    await sync_to_async(_create)()
    return JsonResponse({"ok": True})


def read_then_write(request):
    Item.objects.count()
    Item.objects.create(name="rw")
    return JsonResponse({"ok": True})


def hold(request):
    import time

    from django.db import transaction

    with transaction.atomic():
        Item.objects.create(name="held")  # HOLD-VIEW-LINE
        time.sleep(float(request.GET.get("s", "0.5")))
    return JsonResponse({"ok": True})


def read_txn(request):
    with transaction.atomic():
        list(Item.objects.all()[:5])
        time.sleep(0.02)
    return JsonResponse({"ok": True})


def upgrade(request):
    with transaction.atomic():
        Item.objects.count()
        Item.objects.create(name="upgrade")  # UPGRADE-VIEW-LINE
    return JsonResponse({"ok": True})


@transaction.atomic
def decorated(request):
    Item.objects.create(name="decorated")  # DECORATED-VIEW-LINE
    time.sleep(0.01)
    return JsonResponse({"ok": True})
