"""Write rows at a steady pace for a while; report how many succeeded."""

import os
import time

from django.core.management.base import BaseCommand
from django.db import OperationalError

from tests.project.shop.models import Item


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("--seconds", type=float, default=3.0)
        parser.add_argument("--interval", type=float, default=0.02)
        parser.add_argument("--progress-file")

    def handle(self, *args, seconds, interval, progress_file, **options):
        ok = failed = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                Item.objects.create(name="steady")
                ok += 1
            except OperationalError:
                failed += 1
            if progress_file:
                # Replaced whole, so a reader never sees the file empty mid-write.
                with open(progress_file + ".tmp", "w") as f:
                    f.write(str(ok))
                os.replace(progress_file + ".tmp", progress_file)
            time.sleep(interval)
        self.stdout.write(f"ok={ok} failed={failed}")
