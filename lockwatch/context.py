"""Who is running: a request, a management command, a test or a program.

Kept in a ContextVar, as datasette's tracer does, so it follows async tasks and
``sync_to_async`` threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field


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
    extra: dict[str, str] = field(default_factory=dict)


_current: ContextVar[Context | None] = ContextVar("lockwatch_context", default=None)


def _program_label(argv: list[str]) -> str:
    prog = os.path.basename(argv[0]) if argv and argv[0] else "python"
    if prog in ("manage.py", "django-admin", "django-admin.py") and len(argv) > 1:
        command = argv[1]
        if not command.startswith("-"):
            return f"command:{command}"
    if prog == "__main__.py" and argv:
        prog = os.path.basename(os.path.dirname(argv[0])) or prog
    return f"program:{prog}"


_PROGRAM = _program_label(sys.argv)


def current() -> Context | None:
    return _current.get()


def default_label() -> str:
    test = os.environ.get("PYTEST_CURRENT_TEST")
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
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


@contextlib.contextmanager
def tag(label: str) -> Iterator[Context]:
    """Tag events inside the block, e.g. ``with lockwatch.tag("job:nightly"):``."""
    with bind(Context(label=label, task=task_name())) as ctx:
        yield ctx


def set_command(name: str) -> None:
    """Called for management commands run outside manage.py (call_command)."""
    global _PROGRAM
    _PROGRAM = f"command:{name}"
