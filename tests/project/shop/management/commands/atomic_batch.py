"""A management command whose handle() is one @transaction.atomic transaction."""

from django.core.management.base import BaseCommand
from django.db import transaction

from tests.project.shop.models import Item


class Command(BaseCommand):
    @transaction.atomic  # ATOMIC-HANDLE
    def handle(self, *args, **options):
        Item.objects.create(name="atomic-batch")  # ATOMIC-HANDLE-WRITE
