"""A real Redis channel layer for tests: the project's environment, a layer, a listener."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from lockwatch import live
from tests.conftest import Redis
from tests.support.servers import project_env


def redis_env(lw: Any, tmp_path: Path, redis: Redis) -> dict[str, str]:
    """The test project publishing to ``redis``, migrated."""
    return project_env(tmp_path / "app.sqlite3", lw.store, LOCKWATCH_TEST_REDIS=redis.url)


def redis_layer(url: str):
    from channels_redis.core import RedisChannelLayer

    # Longer than channels-redis's 5 s blocking read (redis-py 8 defaults to 5 s).
    return RedisChannelLayer(hosts=[{"address": url, "socket_timeout": 30}])


async def collect(layer, seconds: float, until=None) -> list[dict]:
    """Batches from the targets' group for ``seconds``, or until ``until(batches)``."""
    channel = await layer.new_channel()
    await layer.group_add(live.TARGETS_GROUP, channel)
    got: list[dict] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (until and until(got)):
        try:
            got.append(await asyncio.wait_for(layer.receive(channel), 0.2))
        except TimeoutError:
            pass
    return got
