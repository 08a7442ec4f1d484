"""Fixtures shared by several test modules (loaded by tests/conftest.py as a plugin)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from lockwatch.dashboard import auth
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.support.dashboard import TOKEN as DASHBOARD_TOKEN
from tests.support.dashboard import server_settings, story
from tests.support.net import free_port
from tests.support.servers import MANAGE, ROOT, Server, child_env


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Server, dict[str, str]]]:
    require_browser()
    store = tmp_path / "lockwatch.sqlite3"
    project_env = child_env(
        LOCKWATCH_TEST_DB=str(tmp_path / "shop.sqlite3"),
        LOCKWATCH_STORE=str(store),
        DJANGO_SETTINGS_MODULE="tests.project.settings",
    )
    server = Server(store, free_port(), tmp_path / "serve.log")
    server.start()  # starts while the project migrates
    try:
        subprocess.run(
            [sys.executable, str(MANAGE), "migrate", "-v0"], cwd=ROOT, env=project_env,
            check=True, timeout=120, capture_output=True,
        )  # fmt: skip
        server.wait_ready()
        yield server, project_env
    finally:
        server.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def story_server(tmp_path: Path) -> Iterator[Server]:
    require_browser()
    with Server.with_story(tmp_path) as server:
        yield server


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "lockwatch.sqlite3"


@pytest.fixture
def ids(store_path: Path) -> dict[str, int]:
    return story(store_path)


@pytest.fixture
def server(store_path: Path) -> Iterator[Path]:
    auth.THROTTLE.clear()  # wrong tokens of earlier tests do not count here
    with server_settings(store_path):
        yield store_path


@pytest.fixture
def client(server: Path) -> Client:
    c = Client()
    assert c.get(f"/?token={DASHBOARD_TOKEN}").status_code == 302
    return c
