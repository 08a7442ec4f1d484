"""lockwatch with CAPTURE_PARAMS on."""

from .lockwatch import *  # noqa: F403
from .lockwatch import LOCKWATCH

LOCKWATCH = {**LOCKWATCH, "CAPTURE_PARAMS": True}
