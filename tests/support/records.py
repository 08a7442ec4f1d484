"""The raw records capture makes for one request, for tests and benchmarks that
offer the pipeline more than real statements could (a flood, a rate to hold)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

SQL = {
    "select": 'SELECT "shop_item"."id", "shop_item"."name", "shop_item"."qty" FROM "shop_item"'
    ' WHERE "shop_item"."id" = %s LIMIT 21',
    "insert": 'INSERT INTO "shop_item" ("name", "qty") VALUES (%s, %s) RETURNING "shop_item"."id"',
    "update": 'UPDATE "shop_item" SET "qty" = %s WHERE "shop_item"."id" = %s',
}


class Unit:
    """Builds the records of one request, fresh each time (new timestamps and keys)."""

    def __init__(self, db: str) -> None:
        from lockwatch.capture.context import Context
        from lockwatch.capture.records import Origin, Who

        root = str(REPO / "demo")
        self.origin = Origin(os.getpid(), "default", db, 1, "exact")
        self.ctx = Context(label="request:POST /orders/", request_id="r1", method="POST",
                           path="/orders/", view="orders/ (shop:order_create)")  # fmt: skip
        self.who = Who(threading.current_thread(), self.ctx, None)
        self.sites = [(f"{root}/shop/views.py", 40 + i, "order_create") for i in range(5)]
        self.seq = 0

    def records(self) -> list[Any]:
        from lockwatch.capture.records import Lock, Query, Request, Transaction

        o, w, s = self.origin, self.who, self.sites
        now = time.time()
        self.seq += 1
        key = f"{o.pid}:{o.conn_id}:{self.seq}"
        q = Query
        return [
            q(o, w, now, 0.00004, SQL["select"], None, "read", None, s[0], 0.0, None),
            q(o, w, now, 0.00004, SQL["select"], None, "read", None, s[1], 0.0, None),
            q(o, w, now, 0.00006, SQL["insert"], None, "write", None, s[2], 0.0, 0.00006),
            q(o, w, now, 0.00001, "BEGIN", None, "begin", None, s[3], 0.0, None),
            Lock(o, w, key, now, SQL["insert"], s[3]),
            q(o, w, now, 0.00005, SQL["insert"], None, "write", None, s[3], 0.0, None),
            q(o, w, now, 0.00005, SQL["update"], None, "write", None, s[4], 0.0, None),
            q(o, w, now, 0.00003, "COMMIT", None, "commit", None, s[4], 0.0, None),
            Transaction(
                o,
                w,
                key,
                now,
                0.0003,
                "deferred",
                s[3],
                "commit",
                now,
                0.0002,
                SQL["insert"],
                s[3],
                4,
                0.0,
                (s[3],),
            ),  # fmt: skip
            Request(w, now, 0.002, 200),
        ]
