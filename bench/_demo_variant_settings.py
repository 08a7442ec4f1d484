"""The demo shop with lockwatch, plus LOCKWATCH keys from ``$BENCH_LOCKWATCH`` (JSON).

Benchmark 2 uses it to find what a missed target comes from, by turning one part of
lockwatch off at a time (``{"EXACT_WAITS": false}``, ``{"ENABLED": false}``, ...).
"""

from __future__ import annotations

import json
import os

from demoproject.settings import *  # noqa: F403
from demoproject.settings import LOCKWATCH

LOCKWATCH = {**LOCKWATCH, **json.loads(os.environ.get("BENCH_LOCKWATCH") or "{}")}
