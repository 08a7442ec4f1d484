"""Who is running: a request, a management command, a test or a program.

Kept in a ContextVar, as datasette's tracer does, so it follows async tasks and
``sync_to_async`` threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any


@dataclass(eq=False)
class Context:
    label: str
    task: str | None = None
    request_id: str | None = None
    method: str | None = None
    path: str | None = None
    view: str | None = None
    # A view function, so a transaction opened by ATOMIC_REQUESTS can name it.
    view_func: object | None = None
    # The dashboard's own requests when it is mounted in the watched project.
    quiet: bool = False
    # Per-request totals, updated by capture.
    queries: int = 0
    db_time: float = 0.0
    wait_time: float = 0.0
    busy: int = 0


CURRENT: ContextVar[Context | None] = ContextVar("lockwatch_context", default=None)


# Programs whose first argument is a management command.
_COMMAND_RUNNERS = ("manage.py", "django-admin", "django-admin.py")


def _utf8(arg: str) -> str:
    """An argument as UTF-8 text: argv bytes that are not UTF-8 arrive as lone
    surrogates, which SQLite cannot store; they read back as \\xff."""
    try:
        arg.encode("utf-8")
        return arg
    except UnicodeError:
        pass
    try:
        return os.fsencode(arg).decode("utf-8", "backslashreplace")
    except UnicodeError:
        return arg.encode("utf-8", "backslashreplace").decode("utf-8")


def _program_label(argv: list[str]) -> str:
    argv = [_utf8(a) for a in argv[:2]]
    prog = os.path.basename(argv[0]) if argv and argv[0] else "python"
    if prog == "__main__.py" and argv:
        # python -m PACKAGE: argv[0] is PACKAGE/__main__.py; python -m django is django-admin.
        prog = os.path.basename(os.path.dirname(argv[0])) or prog
        if prog == "django":
            prog = "django-admin"
    if prog in _COMMAND_RUNNERS and len(argv) > 1:
        command = argv[1]
        if not command.startswith("-"):
            return f"command:{command}"
    return f"program:{prog}"


_PROGRAM = _program_label(sys.argv)


def _in_test() -> bool:
    # A process that a test started inherits PYTEST_CURRENT_TEST: it is not the test.
    return "PYTEST_CURRENT_TEST" in os.environ and "_pytest" in sys.modules


def default_label() -> str:
    # sys.modules first: outside pytest, os.environ (about 0.4 µs a read) is not read
    # for every write.
    test = os.environ.get("PYTEST_CURRENT_TEST") if "_pytest" in sys.modules else None
    if test:
        # "tests/test_x.py::test_y (call)" -> the node id.
        return "test:" + test.rsplit(" (", 1)[0]
    return _PROGRAM


def task_name() -> str | None:
    """The asyncio task running in this thread, if any."""
    if asyncio._get_running_loop() is None:
        return None
    task = asyncio.current_task()
    return task.get_name() if task is not None else None


@contextlib.contextmanager
def bind(ctx: Context) -> Iterator[Context]:
    token = CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        CURRENT.reset(token)


@contextlib.contextmanager
def tag(label: str) -> Iterator[Context]:
    """Tag events inside the block, e.g. ``with lockwatch.tag("job:nightly"):``."""
    with bind(Context(label=label, task=task_name())) as ctx:
        yield ctx


def _command_name(command: object) -> str:
    # call_command and manage.py load NAME from app.management.commands.NAME.
    return type(command).__module__.rpartition(".")[2] or type(command).__name__


def command_started(command: object) -> Token[Context | None] | None:
    """Bind command:NAME while a management command runs, however it was started.

    A request, a tag or a test's setup keeps its own label (so does a test, whose
    node id the pytest plugin looks events up by); an enclosing command gives way
    to the one it calls. Never raises: the command runs either way.
    """
    try:
        outer = CURRENT.get()
        if outer is not None and not outer.label.startswith("command:"):
            return None
        if outer is None and _in_test():
            return None
        return CURRENT.set(Context(label=f"command:{_command_name(command)}", task=task_name()))
    except Exception:
        return None


def restore(token: Token[Context | None] | None) -> None:
    """Undo CURRENT.set(): what command_started() or a setup binding did. Never raises."""
    if token is None:
        return
    with contextlib.suppress(Exception):  # e.g. a token from another context
        CURRENT.reset(token)


def install_command_hook() -> None:
    """Wrap BaseCommand.execute, which manage.py, django-admin, python -m django and
    call_command() all go through, so each command tags its own events. Idempotent."""
    from django.core.management.base import BaseCommand

    original: Callable[..., Any] = BaseCommand.execute
    if getattr(original, "_lockwatch_command_hook", False):
        return

    @functools.wraps(original)
    def execute(self: BaseCommand, *args: Any, **options: Any) -> Any:
        token = command_started(self)
        try:
            return original(self, *args, **options)
        finally:
            restore(token)

    execute._lockwatch_command_hook = True  # type: ignore[attr-defined]
    BaseCommand.execute = execute
