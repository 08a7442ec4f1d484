"""WSGI entry point: ``gunicorn --chdir demo demoproject.wsgi``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demoproject.settings")
application = get_wsgi_application()
