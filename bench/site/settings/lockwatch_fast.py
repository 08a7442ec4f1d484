"""lockwatch with FAST_HANDOFF on: its busy handler polls every 0.25-2 ms."""

from .lockwatch import *  # noqa: F403
from .lockwatch import LOCKWATCH

LOCKWATCH = {**LOCKWATCH, "FAST_HANDOFF": True}
