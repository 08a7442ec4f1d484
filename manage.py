#!/usr/bin/env python
"""Run the standalone lockwatch dashboard: ``python manage.py runserver`` (daphne).

Set LOCKWATCH_STORE to the store to read, and LOCKWATCH_TOKEN to keep one
token across restarts; otherwise a new one is made and printed.
"""

import os
import secrets
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lockwatch.server.settings")
    if not os.environ.get("LOCKWATCH_TOKEN"):
        os.environ["LOCKWATCH_TOKEN"] = secrets.token_urlsafe(24)
    if len(sys.argv) > 1 and sys.argv[1] == "runserver" and not os.environ.get("RUN_MAIN"):
        args = [a for a in sys.argv[2:] if not a.startswith("-")]
        addr = args[0] if args else "127.0.0.1:8000"
        if ":" not in addr:
            addr = f"127.0.0.1:{addr}"
        print(
            f"lockwatch dashboard: http://{addr}/?token={os.environ['LOCKWATCH_TOKEN']}",
            flush=True,
        )
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
