"""The vendored JavaScript is the version pinned in VERSIONS.json, and the pages use it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import lockwatch

STATIC = Path(lockwatch.__file__).parent / "static" / "lockwatch"
PINS = json.loads((STATIC / "VERSIONS.json").read_text())


def test_htmx_matches_its_pin():
    text = (STATIC / "htmx.min.js").read_text(encoding="utf-8")
    assert re.findall(r'version:"([0-9.]+)"', text) == [PINS["htmx.min.js"]["version"]]


def test_plotly_matches_its_pin():
    head = (STATIC / "plotly.min.js").read_text(encoding="utf-8")[:400]
    assert re.search(r"plotly\.js v([0-9.]+)", head).group(1) == PINS["plotly.min.js"]["version"]


def test_plotly_matches_the_python_package_that_builds_the_figures():
    # Figures are built by the Python package; its plotly.js is the one they target.
    from plotly.offline import get_plotlyjs_version

    assert get_plotlyjs_version() == PINS["plotly.min.js"]["version"]


def test_every_pinned_file_is_vendored_and_nothing_comes_from_a_cdn():
    for name in PINS:
        assert (STATIC / name).stat().st_size > 10_000
    templates = Path(lockwatch.__file__).parent / "templates"
    for page in templates.rglob("*.html"):
        assert not re.findall(r'(?:src|href)="(?:https?:)?//', page.read_text()), page
