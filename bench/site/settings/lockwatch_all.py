"""lockwatch recording every statement (CAPTURE_QUERIES "all"), not only slow ones."""

from .lockwatch import *  # noqa: F403
from .lockwatch import LOCKWATCH

LOCKWATCH = {**LOCKWATCH, "CAPTURE_QUERIES": "all"}
