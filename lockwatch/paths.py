"""Which database a SQLite name opens: one answer, wherever lockwatch identifies one.

The backend, ``instrument_sqlite3()``, the E004 check and the flusher's guard all ask
here, so ``file:/srv/app.sqlite3?mode=rwc``, ``/srv/./app.sqlite3`` and a symlink to it
are the same database everywhere: one holder-table key, one ``db`` value, and the store
is recognised as a watched database however the app spells its name.
"""

from __future__ import annotations

import functools
import os
from typing import Any
from urllib.parse import unquote_to_bytes

MEMORY = ":memory:"


@functools.cache
def _uri_by_default() -> bool:
    """Does this SQLite read ``file:`` names as URIs even without ``uri=True``?

    A library built with SQLITE_USE_URI=1 (Debian's is) does.
    """
    import sqlite3

    from lockwatch.plainsqlite import connect as original_connect

    try:
        conn = original_connect(MEMORY)
        try:
            options = {r[0] for r in conn.execute("PRAGMA compile_options")}
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return "USE_URI" in options or "USE_URI=1" in options


def _text(name: Any) -> str:
    if isinstance(name, bytes):
        return os.fsdecode(name)
    if isinstance(name, str):
        return name
    try:
        return os.fsdecode(os.fspath(name))
    except TypeError:
        return ""


def _decode(part: str) -> str:
    # SQLite decodes %HH to bytes; fsdecode keeps bytes that are not UTF-8 (surrogateescape),
    # so the path names the same file.
    return os.fsdecode(unquote_to_bytes(part))


def database(name: Any, *, uri: bool = False) -> str:
    """The database ``name`` opens: an absolute real path, or ``:memory:...`` for no file.

    ``uri`` is the ``uri=`` argument of the connection (Django always passes True).
    A ``file:`` URI is read as SQLite reads it: the authority dropped, the path and
    query percent-decoded, the fragment ignored. ``:memory:``, an empty name (a private
    temporary database), ``mode=memory`` and ``vfs=memdb`` open no file: ``:memory:``,
    or ``:memory:NAME`` for a named one, which other connections of the process share.
    """
    text = _text(name)
    if text.startswith("file:") and (uri or _uri_by_default()):
        return _from_uri(text)
    if not text or text == MEMORY:
        return MEMORY
    return os.path.realpath(text)


def _from_uri(text: str) -> str:
    rest = text[5:].split("#", 1)[0]
    path, _, query = rest.partition("?")
    if path.startswith("//"):  # file://localhost/path or file:///path
        slash = path.find("/", 2)
        path = "" if slash < 0 else path[slash:]
    params: dict[str, str] = {}
    for pair in query.split("&") if query else ():
        key, _, value = pair.partition("=")
        params[_decode(key)] = _decode(value)
    path = _decode(path)
    if params.get("mode") == "memory" or params.get("vfs") == "memdb" or path == MEMORY:
        return MEMORY if path in ("", MEMORY) else MEMORY + path
    if not path:
        return MEMORY  # a private temporary database: no file anyone else can open
    return os.path.realpath(path)
