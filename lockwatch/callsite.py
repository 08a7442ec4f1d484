"""Find the first frame in the user's own code, cheaply.

Walks ``sys._getframe()`` back and remembers, per code object, whether it is
library code. No traceback objects and no source lines are built here: the raw
(filename, line, function) is formatted later, off the query path.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from types import CodeType

import django

from .events import format_call_site

RawSite = tuple[str, int, str]

_LIBRARY_PREFIXES: tuple[str, ...] = ()
_INCLUDE: tuple[str, ...] = ()
_ROOT = os.getcwd()
# Keyed by id(code): hashing a code object hashes its bytecode and constants,
# about 0.3 µs a frame. The entry holds the code, so its id cannot be reused.
_is_library: dict[int, tuple[CodeType, bool]] = {}
_CACHE_MAX = 50_000


def _default_prefixes() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    prefixes = {
        os.path.dirname(os.path.abspath(django.__file__)),
        os.path.dirname(os.path.abspath(__file__)),
        paths["stdlib"],
        paths["platstdlib"],
        paths["purelib"],
        paths["platlib"],
        os.path.dirname(os.__file__),
    }
    for p in sys.path:
        if p.endswith(("site-packages", "dist-packages")):
            prefixes.add(p)
    return tuple(sorted({os.path.realpath(p) + os.sep for p in prefixes} | prefixes))


def configure(root: str, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> None:
    global _LIBRARY_PREFIXES, _INCLUDE, _ROOT
    _LIBRARY_PREFIXES = _default_prefixes() + tuple(exclude)
    _INCLUDE = tuple(include)
    _ROOT = root
    _is_library.clear()
    _formatted.clear()


def _classify(code: CodeType) -> bool:
    name = code.co_filename
    if name.startswith("<"):
        # <frozen ...>, <string>: never the user's line.
        return not name.startswith("<stdin>")
    if _INCLUDE and name.startswith(_INCLUDE):
        return False
    return name.startswith(_LIBRARY_PREFIXES)


def find(depth: int = 2, stop: frozenset[int] = frozenset()) -> RawSite | None:
    """The first non-library frame above the caller, or None.

    Crossing a frame whose code's id is in ``stop`` first also gives None.
    """
    try:
        frame = sys._getframe(depth)
    except ValueError:
        return None
    cache = _is_library
    while frame is not None:
        code = frame.f_code
        key = id(code)
        if stop and key in stop:
            return None
        entry = cache.get(key)
        if entry is not None and entry[0] is code:
            lib = entry[1]
        else:
            if len(cache) >= _CACHE_MAX:  # code made at run time, e.g. by exec()
                cache.clear()
            lib = _classify(code)
            cache[key] = (code, lib)
        if not lib:
            return (code.co_filename, frame.f_lineno, code.co_name)
        frame = frame.f_back
    return None


def _handler_codes() -> frozenset[int]:
    from django.core.handlers.base import BaseHandler

    # By id: a module function's code lives as long as the process.
    return frozenset({id(BaseHandler._get_response.__code__)})


# Django's request handler: a BEGIN reached from it without passing through
# user code was opened by ATOMIC_REQUESTS, so it belongs to the view.
HANDLER_CODES = _handler_codes()


def of_function(func: object) -> RawSite | None:
    code = getattr(func, "__code__", None)
    if code is None:
        func = getattr(func, "__wrapped__", None) or getattr(func, "view_class", None)
        code = getattr(getattr(func, "dispatch", None), "__code__", None)
    if code is None:
        return None
    return (code.co_filename, code.co_firstlineno, code.co_name)


_formatted: dict[RawSite, str] = {}


def format(site: RawSite | None) -> str | None:
    if site is None:
        return None
    text = _formatted.get(site)
    if text is None:
        if len(_formatted) >= 8192:
            _formatted.clear()
        text = _formatted[site] = _format(site)
    return text


def _format(site: RawSite) -> str:
    filename, line, function = site
    try:
        rel = os.path.relpath(filename, _ROOT)
    except ValueError:
        rel = filename
    if rel.startswith(".." + os.sep):
        rel = filename
    return format_call_site(rel, line, function)


configure(os.getcwd())
