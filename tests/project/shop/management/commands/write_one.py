"""Write one row; with a short timeout this fails while another process holds the lock."""

from django.core.management.base import BaseCommand
from django.db import OperationalError

from tests.project.shop.models import Item


class Command(BaseCommand):
    def handle(self, *args, **options):
        try:
            Item.objects.create(name="one")  # WRITE-LINE
        except OperationalError as exc:
            self.stdout.write(f"failed: {exc}")
        else:
            self.stdout.write("ok")
