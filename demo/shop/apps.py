from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        import lockwatch

        # The audit view opens its own sqlite3 connections; capture those too.
        lockwatch.instrument_sqlite3()
