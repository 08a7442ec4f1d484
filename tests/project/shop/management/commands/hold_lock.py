"""Take the write lock and hold it: a long atomic() batch."""

import os
import time

from django.core.management.base import BaseCommand
from django.db import transaction

from tests.project.shop.models import Item


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("--seconds", type=float, default=1.0)
        parser.add_argument("--ready-file")
        # Hold at least --seconds, and on until this file exists: a test's waiter may
        # start late on a loaded machine, and must still find the lock held.
        parser.add_argument("--release-file")

    def handle(self, *args, seconds, ready_file, release_file=None, **options):
        with transaction.atomic():
            Item.objects.create(name="batch")  # HOLD-LINE
            if ready_file:
                open(ready_file, "w").close()
            time.sleep(seconds)
            deadline = time.monotonic() + 60
            while release_file and not os.path.exists(release_file) and time.monotonic() < deadline:
                time.sleep(0.01)
