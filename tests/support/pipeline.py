"""A fresh lockwatch pipeline for a test, torn down afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from django.test import override_settings

from lockwatch import conf, pipeline


@contextlib.contextmanager
def fresh_pipeline(store: Path, **extra) -> Iterator[None]:
    """A new pipeline writing to ``store`` (flushing every 20 ms and storing every
    write as an event unless ``extra`` says otherwise), torn down afterwards."""
    pipeline.shutdown()
    pipeline.reset()
    try:
        settings = {"STORE": str(store), "FLUSH_INTERVAL": 0.02, "HOLD_RECORD_MS": 0, **extra}
        with override_settings(LOCKWATCH=settings):
            conf.reset()
            yield
    finally:
        pipeline.shutdown()
        pipeline.reset()
        conf.reset()
