"""A minimal Django project for the benchmark workers: one model, one settings module per
alternative (plain Django, lockwatch, django-debug-toolbar, django-silk)."""
