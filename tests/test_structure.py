"""The package's shape (issue 17): public paths kept, no reaching into private names,
modules of a readable size, and tests that share helpers only through tests/support.

The layers themselves are import-linter's contracts in pyproject.toml (CI runs it).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lockwatch"
MAX_LINES = 500

# What users name in settings, urls.py, asgi.py and pytest's entry points.
PUBLIC = [
    ("lockwatch.db.backends.sqlite3.base", "DatabaseWrapper"),
    ("lockwatch.middleware", "LockwatchMiddleware"),
    ("lockwatch.urls", "urlpatterns"),
    ("lockwatch.dashboard.routing", "websocket_urlpatterns"),
    ("lockwatch.access", "is_staff"),
    ("lockwatch.apps", "LockwatchConfig"),
    ("lockwatch.checks", None),
    ("lockwatch.pytest_plugin", "pytest_addoption"),
    ("lockwatch", "instrument_sqlite3"),
    ("lockwatch", "tag"),
]


def _sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> list[ast.ImportFrom]:
    tree = ast.parse(path.read_text(), str(path))
    return [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]


@pytest.mark.parametrize(("module", "name"), PUBLIC)
def test_every_public_dotted_path_still_works(module: str, name: str | None) -> None:
    imported = importlib.import_module(module)
    if name is not None:
        assert getattr(imported, name) is not None


def test_no_module_imports_another_modules_private_names() -> None:
    reaching = [
        f"{path.relative_to(ROOT)}:{node.lineno} {alias.name}"
        for path in _sources(PACKAGE)
        for node in _imports(path)
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert reaching == []


def test_every_module_is_under_500_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _sources(PACKAGE)
        if (n := len(p.read_text().splitlines())) >= MAX_LINES
    }
    assert long == {}


def test_tests_share_helpers_through_tests_support_only() -> None:
    """A test module imports no other test module, and bench/ imports none either."""
    crossing = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.module}"
        for folder in (ROOT / "tests", ROOT / "bench")
        for path in _sources(folder)
        if "project" not in path.relative_to(ROOT).parts
        for node in _imports(path)
        if node.module and node.module.split(".")[:2][-1].startswith("test_")
    ]
    assert crossing == []
