"""``python -m bench.callsite [--quick]``: what a user stack costs next to one call site.

Not one of the numbered benchmarks: a micro-benchmark of ``lockwatch.capture.callsite``, printed,
not written to bench/results. Each scenario builds a real Python stack: library frames
(functions compiled with a file name under the standard library, so they are classified
as library code) around the user's frames (functions of this file, as a project's views
and helpers would be), and from its top calls

- ``find(1)``: the first user frame (what capture records today), and
- ``user_stack(1)``: up to 5 user frames, innermost first, which walks on to the bottom
  of the stack when there are fewer.

Scenarios: a request-like stack (40 library frames of server and Django below a view,
a helper, then 15 of ORM and capture above it), a shallow one (a script), and BEGIN of a
``@transaction.atomic``-style function (contextlib's wrapper frame names the function
before it runs). Alternatives take turns round by round; medians over rounds, in µs
per call.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import sysconfig
import threading
import timeit
from collections.abc import Callable
from typing import Any

from lockwatch.capture import callsite

from .stats import median, quartiles, rotate

# Library frames: compiled with a file name under the standard library. The timing loop
# and the ContextDecorator live here too, so that no frame of this file (user code, as
# far as the classifier knows) sits above the helper or below the view.
_LIBRARY_FILE = os.path.join(sysconfig.get_paths()["stdlib"], "_lockwatch_bench_frames.py")
_LIBRARY_SOURCE = """
import contextlib
from time import perf_counter


def library(n, fn, *args):
    return fn(*args) if n <= 0 else library(n - 1, fn, *args)


def timed(out, fn, n):
    t0 = perf_counter()
    for _ in range(n):
        fn(1)
    out.append((perf_counter() - t0) / n * 1e6)


class Atomic(contextlib.ContextDecorator):
    def __init__(self, begin):
        self.begin = begin

    def __enter__(self):
        self.begin()

    def __exit__(self, *exc):
        return None
"""
_lib: dict[str, Any] = {}
exec(compile(_LIBRARY_SOURCE, _LIBRARY_FILE, "exec"), _lib)  # noqa: S102
library: Callable[..., Any] = _lib["library"]
timed: Callable[..., None] = _lib["timed"]
Atomic: type = _lib["Atomic"]

ABOVE = 15  # ORM, backend and capture frames between the helper and the walk


def view(out: list[Any], fn: Callable[[int], Any], n: int) -> None:
    helper(out, fn, n)


def helper(out: list[Any], fn: Callable[[int], Any], n: int) -> None:
    library(ABOVE, timed, out, fn, n)


def begin_view(out: list[Any], fn: Callable[[int], Any], n: int) -> None:
    @Atomic(functools.partial(library, ABOVE, timed, out, fn, n))
    def batch() -> None:  # BEGIN runs before the function does
        return None

    batch()


def _in_thread(below: int, top: Callable[..., None], fn: Callable[[int], Any], n: int) -> float:
    """Time fn at the top of: a thread's library frames, `below` more, then `top`'s."""
    out: list[float] = []
    # A thread: nothing of this file below the view, as under a server.
    t = threading.Thread(target=library, args=(below, top, out, fn, n))
    t.start()
    t.join()
    return out[0]


_pending: list[Any] = []  # (out, fn, n) for the Django view


def django_view(request: Any) -> Any:
    from django.http import HttpResponse

    helper(*_pending)
    return HttpResponse("ok")


urlpatterns: list[Any] = []


def _setup_django() -> None:
    import django
    from django.conf import settings
    from django.urls import path

    if not settings.configured:
        settings.configure(
            SECRET_KEY="bench-only",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=__name__,
            INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes",
                            "django.contrib.sessions", "django.contrib.messages"],
            # startproject's middleware; none of it touches a database on this request.
            MIDDLEWARE=[
                "django.middleware.security.SecurityMiddleware",
                "django.contrib.sessions.middleware.SessionMiddleware",
                "django.middleware.common.CommonMiddleware",
                "django.middleware.csrf.CsrfViewMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware",
                "django.contrib.messages.middleware.MessageMiddleware",
                "django.middleware.clickjacking.XFrameOptionsMiddleware",
            ],
            DATABASES={},
        )  # fmt: skip
        django.setup()
    urlpatterns[:] = [path("", django_view)]


def _django_request(fn: Callable[[int], Any], n: int) -> float:
    """Time fn in a view's helper, in a real Django request (test client, in a thread)."""
    from django.test import Client

    out: list[float] = []
    _pending[:] = [out, fn, n]
    t = threading.Thread(target=Client().get, args=("/",))
    t.start()
    t.join()
    return out[0]


Scenario = Callable[[Callable[[int], Any], int], float]
SCENARIOS: dict[str, Scenario] = {
    "Django request (test client, startproject middleware), view, helper, 15 library": (
        _django_request
    ),
    "synthetic request: 40 library, view, helper, 15 library": functools.partial(
        _in_thread, 40, view
    ),
    "script: 3 library, view, helper, 15 library": functools.partial(_in_thread, 3, view),
    "BEGIN of @atomic function: 40 library, view, wrapper, 15 library": functools.partial(
        _in_thread, 40, begin_view
    ),
}

ALTERNATIVES: dict[str, Callable[[int], Any]] = {
    "find": callsite.find,
    "user_stack": callsite.user_stack,
    # To the bottom of the stack, past Django's handler (the default stops there).
    "user_stack_all": functools.partial(callsite.user_stack, stop=frozenset()),
}


def _record_stack(stacks: list[Any], depth: int) -> None:
    stacks.append(callsite.user_stack(depth + 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.callsite", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few rounds, too noisy to quote")
    args = parser.parse_args(argv)
    rounds, n = (3, 2_000) if args.quick else (15, 20_000)
    _setup_django()
    callsite.configure(os.getcwd())
    print(f"Python {sys.version.split()[0]}; {rounds} rounds of {n:,} calls; µs per call, median")
    print()
    print("| scenario | find | user_stack | to the bottom | user_stack ÷ find | frames |")
    print("|---|---|---|---|---|---|")
    for name, scenario in SCENARIOS.items():
        times: dict[str, list[float]] = {a: [] for a in ALTERNATIVES}
        for r in range(rounds):
            for alt in rotate(list(ALTERNATIVES), r):
                times[alt].append(scenario(ALTERNATIVES[alt], n))
        stacks: list[Any] = []
        scenario(functools.partial(_record_stack, stacks), 1)
        f, s, a = (median(times[alt]) for alt in ALTERNATIVES)
        lo, hi = quartiles(times["user_stack"])
        frames = " < ".join(site[2] for site in stacks[0])
        print(
            f"| {name} | {f:.2f} | {s:.2f} (IQR {lo:.2f}–{hi:.2f}) | {a:.2f} | {s / f:.1f}× "
            f"| {frames} |"
        )
    stack = stacks[0]
    formatted = timeit.timeit(lambda: callsite.format_stack(stack), number=n) / n * 1e6
    print()
    print(f"format_stack, cached (off the query path): {formatted:.2f} µs")
    print(f"e.g. {callsite.format_stack(stack)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
