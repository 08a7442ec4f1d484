"""The standalone dashboard (``lockwatch serve``'s settings) with a Redis channel layer.

``lockwatch.server.settings`` has an in-memory layer and no setting to choose
another, so benchmark 4 (``bench/live.py``) runs the same ASGI app under daphne
with this module, pointing at the redis-server it started (``BENCH_REDIS_URL``).
The consumer then also joins the targets' group, as with a real Redis setup.
"""

from __future__ import annotations

import os

from lockwatch.server.settings import *  # noqa: F403

# socket_timeout above channels-redis's 5 s blocking pop: redis-py 8 reads with a 5 s
# default socket timeout, so with a bare URL an idle consumer's receive() raises
# TimeoutError after 5 s and the websocket is dropped (see bench/live.py's notes).
HOSTS = [{"address": os.environ["BENCH_REDIS_URL"], "socket_timeout": 30}]
CHANNEL_LAYERS = {
    "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": HOSTS}}
}
