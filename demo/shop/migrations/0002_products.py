from typing import Any

from django.db import migrations


def add_products(apps: Any, schema_editor: Any) -> None:
    # checkout picks one of these by id, 1 to 20.
    Product = apps.get_model("shop", "Product")
    Product.objects.bulk_create(
        Product(id=i, name=f"Product {i}", stock=1_000_000) for i in range(1, 21)
    )


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]

    operations = [migrations.RunPython(add_products, migrations.RunPython.noop)]
