"""The standalone dashboard server behind ``lockwatch serve`` and the top-level manage.py."""

from __future__ import annotations

import argparse
from urllib.parse import urlsplit


def public_url(value: str) -> str:
    """``lockwatch serve --public-url``: a scheme and host (and port), as an Origin names them."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a URL like https://lockwatch.example.com (no path)"
        )
    return f"{parts.scheme}://{parts.netloc}"
