"""Real servers and processes for tests: ``lockwatch serve``, the test project's commands.

The child processes get the parent's environment less its test identity (``child_env``),
so each labels itself as the command it is.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import line_of
from tests.support.dashboard import story
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]


MANAGE = ROOT / "tests" / "project" / "manage.py"


COMMANDS = ROOT / "tests" / "project" / "shop" / "management" / "commands"


TOKEN = "browser-test-token-4e1f"


BLOCKER_SITE = (
    f"tests/project/shop/management/commands/hold_lock.py:"
    f"{line_of(COMMANDS / 'hold_lock.py', 'HOLD-LINE')} in handle"
)


WAITER_SITE = (
    f"tests/project/shop/management/commands/write_one.py:"
    f"{line_of(COMMANDS / 'write_one.py', 'WRITE-LINE')} in handle"
)


def child_env(**extra: str) -> dict[str, str]:
    """A child that is not the test project: not the test's own settings or test id (the
    processes label themselves as commands), with this checkout first on PYTHONPATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", "PYTEST_CURRENT_TEST")
    }
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


class Server:
    """``lockwatch serve`` as a subprocess; start() again to restart on the same port."""

    def __init__(self, store: Path, port: int, log: Path) -> None:
        self.store, self.port, self.log = store, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        script = Path(sys.executable).with_name("lockwatch")
        head = [str(script)] if script.exists() else [sys.executable, "-m", "lockwatch"]
        return [*head, "serve", "--store", str(self.store), "--port", str(self.port)]

    def start(self) -> None:
        with open(self.log, "ab") as out:
            # Its secret and sessions beside its log: kept across restarts, never in $HOME.
            env = child_env(
                LOCKWATCH_TOKEN=TOKEN, LOCKWATCH_STATE_DIR=str(self.log.parent / "dashboard-state")
            )
            self.proc = subprocess.Popen(
                self.command(), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"lockwatch serve exited:\n{self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"lockwatch serve did not listen in time:\n{self.log.read_text()}")

    @classmethod
    @contextlib.contextmanager
    def with_story(cls, folder: Path) -> Iterator[Server]:
        """A store in folder with the dashboard story (ids 1 to 7), served until the end."""
        path = folder / "lockwatch.sqlite3"
        story(path)
        server = cls(path, free_port(), folder / "serve.log")
        server.start()
        try:
            server.wait_ready()
            yield server
        finally:
            server.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class Held:
    """A hold_lock process that holds the write lock until ``release()``."""

    def __init__(self, proc: subprocess.Popen[bytes], release_file: Path) -> None:
        self.proc = proc
        self.release_file = release_file

    def poll(self) -> int | None:
        return self.proc.poll()

    def release(self, timeout: float = 30) -> None:
        self.release_file.touch()
        try:
            self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def hold(env: dict[str, str], ready: Path, seconds: float = 0.0) -> Held:
    """hold_lock in its own process, once it holds the write lock: it holds at least
    ``seconds`` and on until released, however slow a loaded machine makes the test."""
    release = ready.with_name(ready.name + ".release")
    holder = subprocess.Popen(
        [sys.executable, str(MANAGE), "hold_lock", "--seconds", str(seconds), "--ready-file",
         str(ready), "--release-file", str(release)], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not ready.exists():
        if holder.poll() is not None or time.monotonic() > deadline:
            holder.kill()
            err = holder.stderr.read().decode() if holder.stderr else ""
            pytest.fail(f"hold_lock never took the lock: {err}")
        time.sleep(0.02)
    return Held(holder, release)


def contention(env: dict[str, str], ready: Path, seconds: float = 2.0) -> str:
    """hold_lock in one process, write_one in another with a 0.3 s timeout: a real busy error.

    The holder holds ``seconds`` and on until the writer has finished, however late
    a loaded machine starts it."""
    holder = hold(env, ready, seconds)
    try:
        writer = subprocess.run(
            [sys.executable, str(MANAGE), "write_one"], cwd=ROOT,
            env={**env, "LOCKWATCH_TEST_TIMEOUT": "0.3"}, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
    finally:
        holder.release(60)
    return writer.stdout.strip()


def project_env(
    db: Path | str, store: Path | str, *, migrate: bool = True, **extra: str
) -> dict[str, str]:
    """A child process of the test project: its database, the store and ``extra``, with
    this test's environment less its id (the child labels itself as its command).
    With ``migrate``, the project's tables are made first."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env.update(LOCKWATCH_TEST_DB=str(db), LOCKWATCH_STORE=str(store), PYTHONPATH=str(ROOT))
    env.update(extra)
    if migrate:
        subprocess.run(
            [sys.executable, str(MANAGE), "migrate", "-v0"], cwd=ROOT, env=env, check=True,
            timeout=120,
        )  # fmt: skip
    return env
