"""Restock every product from a (simulated, slow) supplier feed, while the shop is busy.

The way many nightly jobs are written: one ``atomic()`` around the whole batch, with
the slow per-item work inside it. The write lock is held from the first UPDATE to the
COMMIT, so every web request that writes in the meantime waits, or fails.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import OperationalError, transaction
from django.db.models import F

from shop.models import Product


def supplier_quantity(product: Product, work_ms: float) -> int:
    time.sleep(work_ms / 1000)  # stands in for an HTTP call or a slow computation
    return 10


def restock_in_one_transaction(products: list[Product], work_ms: float) -> None:
    with transaction.atomic():
        for product in products:
            quantity = supplier_quantity(product, work_ms)
            Product.objects.filter(pk=product.pk).update(stock=F("stock") + quantity)


def restock_fixed(products: list[Product], work_ms: float, chunk: int = 50) -> None:
    # The slow work first, with no transaction open; then short transactions of
    # `chunk` rows each, so web requests get the lock between them.
    quantities = [(p.pk, supplier_quantity(p, work_ms)) for p in products]
    for start in range(0, len(quantities), chunk):
        with transaction.atomic():
            for pk, quantity in quantities[start : start + chunk]:
                Product.objects.filter(pk=pk).update(stock=F("stock") + quantity)


class Command(BaseCommand):
    help = __doc__
    requires_system_checks: list[str] = []  # migrate has shown them; keep the demo's output short

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--items", type=int, default=100, help="products to restock")
        parser.add_argument("--work-ms", type=float, default=20.0, help="slow work per item")

    def handle(self, *args: Any, items: int, work_ms: float, **options: Any) -> None:
        catalogue = list(Product.objects.all())
        products = [catalogue[i % len(catalogue)] for i in range(items)]
        how = "in chunks (fixed)" if settings.DEMO_FIXED else "in one transaction"
        t0 = time.perf_counter()
        try:
            if settings.DEMO_FIXED:
                restock_fixed(products, work_ms)
            else:
                restock_in_one_transaction(products, work_ms)
        except OperationalError as exc:
            self.stderr.write(
                f"restock {how}: failed after {time.perf_counter() - t0:.1f} s: {exc}"
            )
            raise SystemExit(1) from exc
        self.stdout.write(f"restock {how}: {items} items in {time.perf_counter() - t0:.1f} s")
