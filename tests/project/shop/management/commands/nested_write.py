"""Write, run another command through call_command(), write again."""

from django.core.management import call_command
from django.core.management.base import BaseCommand

from tests.project.shop.models import Item


class Command(BaseCommand):
    def handle(self, *args, **options):
        Item.objects.create(name="nested-before")  # NESTED-BEFORE
        call_command("write_one")
        Item.objects.create(name="nested-after")  # NESTED-AFTER
