"""Find the user's own frames, cheaply.

Walks ``sys._getframe()`` back and remembers, per code object, whether it is
library code. No traceback objects and no source lines are built here: the raw
(filename, line, function) is formatted later, off the query path.

Library code is Django, lockwatch, the standard library, site-packages, and the
scripts of the interpreter's prefixes (a virtualenv's ``bin/gunicorn``), plus
any console-script shim wherever it lives. A frame of contextlib's
``ContextDecorator`` wrapper (``@transaction.atomic`` on a function) stands for
the function it wraps, which it has not called yet when ``BEGIN`` runs.
"""

from __future__ import annotations

import contextlib
import os
import sys
import sysconfig
import weakref
from types import CodeType, FrameType
from typing import Any

import django

from lockwatch.events import format_call_site

RawSite = tuple[str, int, str]
# Innermost first: stack[0] is what find() gives for the same depth.
UserStack = tuple[RawSite, ...]

_LIBRARY_PREFIXES: tuple[str, ...] = ()
_INCLUDE: tuple[str, ...] = ()
_EXCLUDE: tuple[str, ...] = ()
_ROOT = os.getcwd()
_ROOTS: tuple[str, ...] = (_ROOT + os.sep,)
# What a code object is: True library, False the user's, _WRAPPER a decorator's
# wrapper frame (library, but it names the function it wraps), _END Django's
# request handler (library; where a user stack ends by default).
_WRAPPER = 2
_END = 3
# Keyed by id(code): hashing a code object hashes its bytecode and constants,
# about 0.3 µs a frame. The entry holds the code, so its id cannot be reused.
_kinds: dict[int, tuple[CodeType, bool | int]] = {}
# Plain library code by id, for find() to skip those frames on one lookup. It holds
# the code too, so an id here is never a later object's.
_library: dict[int, CodeType] = {}
_CACHE_MAX = 50_000
STACK_LIMIT = 5


def _wrapper_codes() -> frozenset[int]:
    """contextlib's ``inner`` closures: ContextDecorator's and AsyncContextDecorator's."""
    codes = set()
    for cls in (contextlib.ContextDecorator, contextlib.AsyncContextDecorator):
        for const in cls.__call__.__code__.co_consts:
            if isinstance(const, CodeType) and const.co_name == "inner":
                codes.add(id(const))  # module-level code: lives as long as the process
    return frozenset(codes)


_WRAPPER_CODES = _wrapper_codes()


def _script_dirs() -> set[str]:
    """Where console scripts are installed: every prefix's bin/ (Scripts/ on Windows)."""
    dirs = {os.path.dirname(sys.executable)} if sys.executable else set()
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for prefix in prefixes:
        dirs.add(os.path.join(prefix, "Scripts" if os.name == "nt" else "bin"))
    for scheme in (sysconfig.get_default_scheme(), f"{os.name}_user"):
        with contextlib.suppress(KeyError, ValueError):
            dirs.add(sysconfig.get_path("scripts", scheme))
    return {d for d in dirs if d}


def _default_prefixes() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    prefixes = {
        os.path.dirname(os.path.abspath(django.__file__)),
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # all of lockwatch
        paths["stdlib"],
        paths["platstdlib"],
        paths["purelib"],
        paths["platlib"],
        os.path.dirname(os.__file__),
        *_script_dirs(),
    }
    for p in sys.path:
        if p.endswith(("site-packages", "dist-packages")):
            prefixes.add(p)
    # With a separator: /x/lockwatch must not match /x/lockwatch_app/.
    with_sep = {os.path.abspath(p).rstrip(os.sep) + os.sep for p in prefixes}
    with_sep |= {os.path.realpath(p).rstrip(os.sep) + os.sep for p in prefixes}
    return tuple(sorted(with_sep))


def configure(root: str, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> None:
    global _LIBRARY_PREFIXES, _INCLUDE, _EXCLUDE, _ROOT, _ROOTS
    _EXCLUDE = tuple(exclude)
    _LIBRARY_PREFIXES = _default_prefixes() + _EXCLUDE
    _INCLUDE = tuple(include)
    _ROOT = root
    roots = {os.path.abspath(root), os.path.realpath(root)}
    _ROOTS = tuple(sorted(r.rstrip(os.sep) + os.sep for r in roots))
    _library.clear()
    _kinds.clear()
    _unwrapped_codes.clear()
    _formatted.clear()
    _formatted_stacks.clear()


def configuration() -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """The arguments of the last configure(), to restore it."""
    return _ROOT, _INCLUDE, _EXCLUDE


# What a pip, uv or distlib console-script shim's module code refers to: it imports
# one function and runs sys.exit(func()), after fixing sys.argv[0].
_SHIM_NAMES = frozenset({"sys", "exit", "argv", "__name__"})


def _is_console_script(code: CodeType) -> bool:
    if code.co_name != "<module>" or code.co_filename.endswith((".py", ".pyw")):
        return False
    if any(isinstance(c, CodeType) for c in code.co_consts):
        return False  # defines functions or classes: a real script
    return _SHIM_NAMES.issubset(code.co_names) and len(code.co_names) <= 12


def _is_library(name: str) -> bool:
    if _INCLUDE and name.startswith(_INCLUDE):
        return False
    return name.startswith(_LIBRARY_PREFIXES)


def _classify(code: CodeType) -> bool | int:
    name = code.co_filename
    if name.startswith("<"):
        # <frozen ...>, <string>: never the user's line.
        return not name.startswith("<stdin>")
    if id(code) in _WRAPPER_CODES:
        return _WRAPPER
    if id(code) in STACK_ENDS:
        return _END
    if not os.path.isabs(name):
        name = os.path.abspath(name)
    # Once per code object: the path as imported, and through any symlinks.
    if _is_library(name) or _is_library(os.path.realpath(name)):
        return True
    return _is_console_script(code)


def _kind(code: CodeType) -> bool | int:
    key = id(code)
    entry = _kinds.get(key)
    if entry is not None and entry[0] is code:
        return entry[1]
    if len(_kinds) >= _CACHE_MAX:  # code made at run time, e.g. by exec()
        _library.clear()
        _kinds.clear()
    kind = _kinds[key] = (code, _classify(code))
    if kind[1] is True:
        _library[key] = code
    return kind[1]


def find(depth: int = 2, stop: frozenset[int] = frozenset()) -> RawSite | None:
    """The first non-library frame above the caller, or None.

    Crossing a frame whose code's id is in ``stop`` first also gives None.
    """
    try:
        # (Any: the skip loop below relies on None having no f_code.)
        frame: Any = sys._getframe(depth)
    except ValueError:
        return None
    kinds = _kinds
    library = _library
    while frame is not None:
        if not stop:
            # Most frames are Django's and lockwatch's, already known: skip them fast.
            try:
                while id(frame.f_code) in library:
                    frame = frame.f_back
            except AttributeError:  # past the outermost frame (None has no f_code)
                return None
        code = frame.f_code
        key = id(code)
        if stop and key in stop:
            return None
        entry = kinds.get(key)
        kind = entry[1] if entry is not None and entry[0] is code else _kind(code)
        if kind is True:
            frame = frame.f_back
            continue
        if kind is False:
            return (code.co_filename, frame.f_lineno, code.co_name)
        if kind is _WRAPPER:
            # Had the wrapped function run, its frame would have come first.
            site = _wrapped_site(frame)
            if site is not None:
                return site
        frame = frame.f_back
    return None


def user_stack(
    depth: int = 2, limit: int = STACK_LIMIT, stop: frozenset[int] | None = None
) -> UserStack:
    """Up to ``limit`` of the user's frames above the caller, innermost first.

    ``depth`` means what it means for find(), and ``stack[0]`` is what find()
    gives. Crossing a frame whose code's id is in ``stop`` ends the stack there
    (it may be empty); by default that is Django's request handler, so a
    request's stack ends at its view and the middleware and server below it are
    not walked. A decorated function that has not run yet (``@transaction.atomic``
    at its BEGIN) appears as its definition, once.
    """
    ends = stop is None  # the handler is marked in the cache: no set lookup per frame
    if stop is None:
        stop = frozenset()
    try:
        # (Any: the skip loop below relies on None having no f_code.)
        frame: Any = sys._getframe(depth)
    except ValueError:
        return ()
    kinds = _kinds
    library = _library
    sites: list[RawSite] = []
    codes: list[CodeType] = []
    while frame is not None:
        if not stop:
            try:  # as in find(): known library frames first
                while id(frame.f_code) in library:
                    frame = frame.f_back
            except AttributeError:
                break
        code = frame.f_code
        key = id(code)
        if stop and key in stop:
            break
        entry = kinds.get(key)
        kind = entry[1] if entry is not None and entry[0] is code else _kind(code)
        if kind is True:
            frame = frame.f_back
            continue
        if kind is False:
            sites.append((code.co_filename, frame.f_lineno, code.co_name))
            codes.append(code)
        elif kind is _END:
            if ends:
                break
        else:
            target = _user_code(_wrapped_function(frame))
            if target is not None and not any(c is target for c in codes):
                sites.append((target.co_filename, target.co_firstlineno, target.co_name))
                codes.append(target)
        if len(sites) >= limit:
            break
        frame = frame.f_back
    return tuple(sites)


class Lazy:
    """A statement's call site and user stack, found only when something is recorded:
    walking frames for every statement of a transaction would cost more than the rest."""

    __slots__ = ("found",)

    def __init__(self, site: RawSite | None) -> None:
        self.found = site

    def site(self) -> RawSite | None:
        if self.found is None:
            self.found = find(2)
        return self.found

    def stack(self) -> UserStack:
        # Waits and busy errors only: rare, so the longer walk is off the hot path.
        walked = user_stack(2)
        if walked and self.found is None:
            self.found = walked[0]
        return walked


def _wrapped_function(frame: FrameType) -> object:
    try:
        return frame.f_locals.get("func")  # the closure cell of contextlib's inner
    except Exception:
        return None


def _wrapped_site(frame: FrameType) -> RawSite | None:
    return of_function(_wrapped_function(frame))


def _handler_codes(*names: str) -> frozenset[int]:
    from django.core.handlers.base import BaseHandler

    # By id: a module function's code lives as long as the process.
    return frozenset(id(getattr(BaseHandler, name).__code__) for name in names)


# Django's request handler: a BEGIN reached from it without passing through
# user code was opened by ATOMIC_REQUESTS, so it belongs to the view.
HANDLER_CODES = _handler_codes("_get_response")
# Where a user stack ends by default: below the view, only middleware and the server.
STACK_ENDS = _handler_codes("_get_response", "_get_response_async")

# Class-based views: the first of these the user's class defines names it.
_VIEW_METHODS = ("dispatch", "get", "post", "put", "patch", "delete", "head", "options")


def _unwrapped(func: object) -> list[object]:
    """func, then what it wraps, outermost first: __wrapped__, contextlib's
    wrapped func, a bound method's function, a partial's function."""
    chain: list[object] = []
    while func is not None and len(chain) < 32 and not any(f is func for f in chain):
        chain.append(func)
        nxt = getattr(func, "__wrapped__", None)
        if nxt is None:
            code = getattr(func, "__code__", None)
            if code is not None and id(code) in _WRAPPER_CODES:
                nxt = _closure_value(func, "func")
            elif code is None:
                nxt = getattr(func, "__func__", None) or getattr(func, "func", None)
        func = nxt
    return chain


def _closure_value(func: object, name: str) -> object:
    code = getattr(func, "__code__", None)
    closure = getattr(func, "__closure__", None)
    if code is None or not closure or name not in code.co_freevars:
        return None
    try:
        return closure[code.co_freevars.index(name)].cell_contents
    except ValueError:  # an empty cell
        return None


# id(func) -> (weak reference to func, its user code): a view or decorated function
# is unwrapped once. Weak, so that a closure's cells are not kept alive; the reference
# also tells a reused id from the function it was cached for.
_unwrapped_codes: dict[int, tuple[weakref.ref[Any], CodeType | None]] = {}


def _user_code(func: object) -> CodeType | None:
    """The code of the user's function behind func (decorators removed), or None."""
    if func is None:
        return None
    entry = _unwrapped_codes.get(id(func))
    if entry is not None and entry[0]() is func:
        return entry[1]
    code = _find_user_code(func)
    try:
        ref = weakref.ref(func)
    except TypeError:  # not weakly referenceable: not cached
        return code
    if len(_unwrapped_codes) >= 4096:
        _unwrapped_codes.clear()
    _unwrapped_codes[id(func)] = (ref, code)
    return code


def _find_user_code(func: object) -> CodeType | None:
    try:
        chain = _unwrapped(func)
        for f in reversed(chain):  # innermost first: the view, not a decorator
            code = getattr(f, "__code__", None)
            if isinstance(code, CodeType) and _kind(code) is False:
                return code
        for f in chain:
            view_class = getattr(f, "view_class", None)
            if view_class is None:
                continue
            for name in _VIEW_METHODS:
                code = getattr(getattr(view_class, name, None), "__code__", None)
                if isinstance(code, CodeType) and _kind(code) is False:
                    return code
    except Exception:  # an odd callable: no site rather than a failure
        return None
    return None


def of_function(func: object) -> RawSite | None:
    """Where the user's function behind func (a view, maybe decorated) is defined.

    None when there is only library code behind it.
    """
    code = _user_code(func)
    if code is None:
        return None
    return (code.co_filename, code.co_firstlineno, code.co_name)


_formatted: dict[RawSite, str] = {}
_formatted_stacks: dict[UserStack, str] = {}
STACK_SEPARATOR = " < "


def format(site: RawSite | None) -> str | None:
    if site is None:
        return None
    text = _formatted.get(site)
    if text is None:
        if len(_formatted) >= 8192:
            _formatted.clear()
        text = _formatted[site] = _format(site)
    return text


def format_stack(stack: UserStack | None) -> str | None:
    """'shop/helpers.py:12 in charge < shop/views.py:83 in checkout', or None if empty."""
    if not stack:
        return None
    text = _formatted_stacks.get(stack)
    if text is None:
        if len(_formatted_stacks) >= 8192:
            _formatted_stacks.clear()
        text = STACK_SEPARATOR.join(format(site) or "" for site in stack)
        _formatted_stacks[stack] = text
    return text


def relative(filename: str) -> str:
    """filename relative to the project root when under it (symlinks resolved), else absolute."""
    path = os.path.abspath(filename)
    for candidate in (path, os.path.realpath(path)):
        for root in _ROOTS:
            if candidate.startswith(root):
                return candidate[len(root) :]
    return path


def _format(site: RawSite) -> str:
    filename, line, function = site
    if not filename.startswith("<"):
        filename = relative(filename)
    return format_call_site(filename, line, function)


configure(os.getcwd())
