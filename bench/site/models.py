from __future__ import annotations

from django.db import models


class Item(models.Model):
    """The same shape as the test project's ``shop.Item``."""

    name = models.CharField(max_length=100)
    qty = models.IntegerField(default=0)

    class Meta:
        app_label = "benchsite"
