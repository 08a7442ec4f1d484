"""Grow a WAL file without checkpointing, then close: the last connection to
close a WAL database checkpoints it."""

from django.core.management.base import BaseCommand
from django.db import connection


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("--mb", type=int, default=64)
        parser.add_argument("--ready-file")

    def handle(self, *args, mb, ready_file, **options):
        with connection.cursor() as c:
            c.execute("PRAGMA wal_autocheckpoint = 0")
            c.execute("CREATE TABLE IF NOT EXISTS wal_filler (b BLOB)")
            for _ in range(mb):
                c.execute("INSERT INTO wal_filler VALUES (randomblob(1048576))")
        open(ready_file, "w").close()
        connection.close()
