"""A benchmark worker: one Django configuration per process, driven over stdin/stdout.

Started by ``bench.workers.Worker`` as ``python -m bench.worker ALTERNATIVE`` with
DJANGO_SETTINGS_MODULE, BENCH_DB and BENCH_STORE set. It reads one JSON command per
line and answers with one JSON line, so the driver can interleave rounds across
alternatives that cannot share a process (each has its own settings and backend).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import django

from bench.workers import Protocol

_protocol = Protocol()  # before django.setup(), which may print
django.setup()

from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import RequestFactory  # noqa: E402

from bench.site.models import Item  # noqa: E402
from bench.site.views import Job  # noqa: E402

SEED_ROWS = 100


# -- the operations measured ---------------------------------------------------


def op_select(i: int) -> None:
    Item.objects.get(pk=1 + i % SEED_ROWS)


def op_insert(i: int) -> None:
    Item.objects.create(name="bench", qty=i)


def op_atomic(i: int) -> None:
    with transaction.atomic():
        Item.objects.create(name="bench", qty=i)
        Item.objects.filter(pk=1 + i % SEED_ROWS).update(qty=i)
        Item.objects.filter(pk=1 + (i + 1) % SEED_ROWS).update(qty=i)


OPS: dict[str, Callable[[int], None]] = {
    "select": op_select,
    "insert": op_insert,
    "atomic": op_atomic,
}


# -- what each alternative does around a round (a "request") --------------------


class Alternative:
    """Plain Django: nothing around a round."""

    focus: tuple[str, ...] = ()

    def start(self) -> None:
        pass

    def finish(self) -> None:
        pass

    def settle(self) -> None:
        """After setup: whatever a round must find already there."""


class Lockwatch(Alternative):
    """LockwatchMiddleware (in these settings) binds the request Context; flush after."""

    def __init__(self) -> None:
        import lockwatch

        from .profiling import package_dir

        self.focus = (package_dir(lockwatch),)

    def finish(self) -> None:
        import lockwatch

        lockwatch.flush()  # counted in CPU time, not wall time (see bench.overhead)

    def settle(self) -> None:
        self.finish()  # the store exists before a round, as a new worker finds it


class _NoFlusher:
    def flush_now(self, timeout: float = 10.0) -> None:
        pass

    def stop(self, timeout: float = 10.0) -> None:
        pass


class LockwatchInline(Lockwatch):
    """Diagnosis only: the capture path alone, with the flusher replaced by a no-op
    and the buffer emptied between rounds."""

    def __init__(self) -> None:
        super().__init__()
        from lockwatch import pipeline

        pipeline._flusher = _NoFlusher()  # type: ignore[assignment]

    def finish(self) -> None:
        from lockwatch import pipeline

        pipeline.current_buffer().drain()


class LockwatchNoSite(LockwatchInline):
    """Diagnosis only: the capture path alone, as above, with every call site a constant
    instead of a frame walk: the difference from LockwatchInline is what call sites cost."""

    def __init__(self) -> None:
        super().__init__()
        from lockwatch.capture import callsite

        site = ("bench.py", 1, "bench")
        callsite.find = lambda depth=2, stop=frozenset(): site  # type: ignore[assignment]


class Toolbar(Alternative):
    """A fresh DebugToolbar per round with its SQL panel's instrumentation on, as the
    toolbar does for each request (``enable_instrumentation`` → ``wrap_cursor``)."""

    def __init__(self) -> None:
        import debug_toolbar
        from django.test import RequestFactory

        from .profiling import package_dir

        self.focus = (package_dir(debug_toolbar),)
        self.factory = RequestFactory()
        self.panel: Any = None

    def start(self) -> None:
        from debug_toolbar.toolbar import DebugToolbar

        toolbar = DebugToolbar(self.factory.get("/round/"), lambda request: None)
        self.panel = toolbar.get_panel_by_id("SQLPanel")
        self.panel.enable_instrumentation()

    def finish(self) -> None:
        self.panel.disable_instrumentation()
        self.panel = None


class Silk(Alternative):
    """SilkyMiddleware.process_request's SQL part: patch SQLCompiler.execute_sql and
    configure the DataCollector with a request model (saving it is left out)."""

    def __init__(self) -> None:
        import silk
        from django.db.models.sql.compiler import SQLCompiler
        from silk.sql import execute_sql

        from .profiling import package_dir

        self.focus = (package_dir(silk),)
        if not hasattr(SQLCompiler, "_execute_sql"):
            SQLCompiler._execute_sql = SQLCompiler.execute_sql  # type: ignore[attr-defined]
            SQLCompiler.execute_sql = execute_sql  # type: ignore[method-assign]

    def start(self) -> None:
        from silk.collector import DataCollector
        from silk.models import Request

        DataCollector().configure(Request(path="/round/", method="GET"), should_profile=False)

    def finish(self) -> None:
        from silk.collector import DataCollector

        DataCollector().clear()


ALTERNATIVES: dict[str, type[Alternative]] = {
    "plain": Alternative,
    "lockwatch": Lockwatch,
    "lockwatch_params": Lockwatch,
    "lockwatch_inline": LockwatchInline,
    "lockwatch_nosite": LockwatchNoSite,
    "lockwatch_all": Lockwatch,
    "lockwatch_fast": Lockwatch,
    "toolbar": Toolbar,
    "silk": Silk,
}


# -- commands ------------------------------------------------------------------


def setup() -> dict[str, Any]:
    with connection.schema_editor() as editor:
        editor.create_model(Item)
    Item.objects.bulk_create(Item(name=f"seed{i}", qty=i) for i in range(SEED_ROWS))
    return {"engine": connection.settings_dict["ENGINE"]}


_handler: WSGIHandler | None = None


def through_request(fn: Callable[[], Any]) -> Any:
    global _handler
    if _handler is None:
        _handler = WSGIHandler()
    Job.fn = fn
    environ = RequestFactory()._base_environ(PATH_INFO="/round/", REQUEST_METHOD="GET")
    response = _handler(environ, lambda status, headers: None)
    response.close()
    if response.status_code != 200:
        raise RuntimeError(f"round request failed: {response.status_code}")
    return Job.result


def run_round(alt: Alternative, op: str, n: int, offset: int) -> dict[str, float]:
    fn = OPS[op]

    def loop() -> float:
        t0 = time.perf_counter()
        for i in range(offset, offset + n):
            fn(i)
        return time.perf_counter() - t0

    alt.start()
    c0 = time.process_time()  # all threads: includes lockwatch's flusher
    wall = through_request(loop)
    alt.finish()
    c1 = time.process_time()
    return {"wall_us": wall * 1e6 / n, "cpu_us": (c1 - c0) * 1e6 / n}


def profile_round(alt: Alternative, op: str, n: int) -> dict[str, Any]:
    import bench

    from .profiling import package_dir, profile, summary

    fn = OPS[op]
    alt.start()
    session = profile(lambda: through_request(lambda: [fn(i) for i in range(n)]))
    alt.finish()
    return summary(session, alt.focus, (package_dir(django), package_dir(bench)), n)


def lines_of_op(op: str) -> dict[str, int]:
    """Python lines one operation executes (sys.settrace), by package: what each
    alternative's code adds, independent of the machine's speed. Warm: the op runs
    twice first, in the same request."""
    fn = OPS[op]
    counts: dict[str, int] = {}
    packages = {"django": os.sep + "django" + os.sep, "lockwatch": os.sep + "lockwatch" + os.sep}

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            name = frame.f_code.co_filename
            where = next((k for k, part in packages.items() if part in name), "other")
            counts[where] = counts.get(where, 0) + 1
        return tracer

    def loop() -> None:
        fn(10_000_001)
        fn(10_000_002)
        sys.settrace(tracer)
        try:
            fn(10_000_003)
        finally:
            sys.settrace(None)

    through_request(loop)
    return counts


def mixed_loop(alt: Alternative, selects: int, creates: int) -> dict[str, float]:
    """Six point selects to one create, in one request; then a flush, so the flusher's
    work for the loop is inside the measured CPU."""
    every = max(selects // max(creates, 1), 1)

    def loop() -> None:
        done = 0
        for i in range(selects):
            op_select(i)
            if (i + 1) % every == 0 and done < creates:
                op_insert(i)
                done += 1
        for i in range(done, creates):
            op_insert(i)

    alt.start()
    c0, w0 = time.process_time(), time.perf_counter()
    through_request(loop)
    alt.finish()
    return {"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0}


def handoff_wait() -> None:
    """Take the write lock while another process holds it; report when we got it."""
    cursor = connection.cursor()
    _send({"started": time.perf_counter()})
    cursor.execute("BEGIN IMMEDIATE")
    acquired = time.perf_counter()
    cursor.execute("COMMIT")
    _send({"acquired": acquired})


def timed_create(alt: Alternative, i: int) -> dict[str, float]:
    """One ``create()`` in a request, which may wait for the write lock: the CPU of the
    request's thread while it runs, and of the whole process with the flush after it."""
    thread: list[float] = []

    def one() -> None:
        t0 = time.thread_time()
        op_insert(i)
        thread.append(time.thread_time() - t0)

    alt.start()
    c0, w0 = time.process_time(), time.perf_counter()
    through_request(one)
    wall = time.perf_counter() - w0
    alt.finish()
    return {"thread_s": thread[0], "cpu_s": time.process_time() - c0, "wall_s": wall}


_send = _protocol.send


def main() -> None:
    alt = ALTERNATIVES[sys.argv[1]]()
    offset = 0

    def round_(cmd: dict[str, Any]) -> dict[str, float]:
        nonlocal offset
        reply = run_round(alt, cmd["op"], cmd["n"], offset)
        offset += cmd["n"]
        return reply

    _protocol.serve(
        {
            "setup": lambda cmd: {**setup(), "pid": os.getpid(), **(alt.settle() or {})},
            "round": round_,
            "profile": lambda cmd: profile_round(alt, cmd["op"], cmd["n"]),
            "handoff_wait": lambda cmd: handoff_wait(),  # sends its own two replies
            "mixed": lambda cmd: mixed_loop(alt, cmd["selects"], cmd["creates"]),
            "lines": lambda cmd: lines_of_op(cmd["op"]),
            "timed_create": lambda cmd: timed_create(alt, cmd["i"]),
        }
    )


if __name__ == "__main__":
    main()
