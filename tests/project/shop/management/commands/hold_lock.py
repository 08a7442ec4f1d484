"""Take the write lock and hold it: a long atomic() batch."""

import time

from django.core.management.base import BaseCommand
from django.db import transaction

from tests.project.shop.models import Item


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("--seconds", type=float, default=1.0)
        parser.add_argument("--ready-file")

    def handle(self, *args, seconds, ready_file, **options):
        with transaction.atomic():
            Item.objects.create(name="batch")  # HOLD-LINE
            if ready_file:
                open(ready_file, "w").close()
            time.sleep(seconds)
