"""Statement classes and fingerprints."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

# The first word is looked for in this many characters: leading comments longer than
# that make the statement "other". Scanning is linear (no backtracking regex).
_PREFIX = 8192
_BLANK = re.compile(r"\s*")
_WORD = re.compile(r"[A-Za-z]+")
# A CTE that ends in a write. One linear pass, case-insensitive, over the whole text:
# the write may come after CTEs longer than the prefix.
_CTE_WRITE = re.compile(r"\)\s*(?:INSERT|UPDATE|DELETE|REPLACE)\b", re.I)

_CLASS_OF_WORD = {
    "SELECT": "read",
    "VALUES": "read",
    "EXPLAIN": "read",
    "INSERT": "write",
    "UPDATE": "write",
    "DELETE": "write",
    "REPLACE": "write",
    "UPSERT": "write",
    "CREATE": "ddl",
    "DROP": "ddl",
    "ALTER": "ddl",
    "REINDEX": "ddl",
    "VACUUM": "ddl",
    "ANALYZE": "ddl",
    "BEGIN": "begin",
    "SAVEPOINT": "begin",
    "COMMIT": "commit",
    "END": "commit",
    "RELEASE": "commit",
    "ROLLBACK": "rollback",
    "PRAGMA": "pragma",
}

# Statement -> class. capture.py reads it directly (``CLASSES.get(sql)``) on its hot
# path, so it stays a plain dict, cleared in place and never rebound. Bounded by
# count and by the characters of its keys: a statement longer than _ENTRY_MAX is
# classified again each time (on its prefix), never kept.
CLASSES: dict[str, str] = {}
_CACHE_MAX = 4096
_CACHE_MAX_CHARS = 2 * 1024 * 1024
_ENTRY_MAX = 16 * 1024
_cache_chars = 0
_cache_lock = threading.Lock()


def _skip(space: Callable[..., re.Match[str] | None], sql: str, i: int, end: int) -> int:
    found = space(sql, i, end)
    return found.end() if found is not None else i  # the pattern matches the empty string


def _first_word(sql: str) -> str | None:
    """The first word after whitespace and comments, within the prefix, or None."""
    end = min(len(sql), _PREFIX)
    space = _BLANK.match
    i = _skip(space, sql, 0, end)
    while i < end:
        if sql.startswith("--", i):
            j = sql.find("\n", i + 2, end)  # a line comment needs its newline
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2, end)
            j = j + 1 if j >= 0 else j
        else:
            break
        if j < 0:
            return None
        i = _skip(space, sql, j + 1, end)
    if i >= end:
        return None
    m = _WORD.match(sql, i, i + 16)  # no keyword is longer; a longer word is "other"
    return m.group() if m else None


def _classify(sql: str) -> str:
    word = _first_word(sql)
    if word is None:
        return "other"
    word = word.upper()
    if word == "WITH":
        return "write" if _CTE_WRITE.search(sql) else "read"
    return _CLASS_OF_WORD.get(word, "other")


def statement_class(sql: str) -> str:
    cls = CLASSES.get(sql)
    if cls is None:
        cls = _classify(sql)
        size = len(sql)
        if size <= _ENTRY_MAX:
            global _cache_chars
            with _cache_lock:  # only on a miss: keeps the character count exact
                if len(CLASSES) >= _CACHE_MAX or _cache_chars + size > _CACHE_MAX_CHARS:
                    CLASSES.clear()
                    _cache_chars = 0
                if sql not in CLASSES:
                    CLASSES[sql] = cls
                    _cache_chars += size
    return cls


def begin_mode(sql: str) -> str | None:
    """deferred/immediate/exclusive for a BEGIN, else None."""
    words = sql.split()
    if not words or words[0].upper() != "BEGIN":
        return None
    for word in words[1:]:
        w = word.upper().rstrip(";")
        if w in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
            return w.lower()
    return "deferred"


_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w\"'])-?\b\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b")
_HEX = re.compile(r"\bX'[0-9A-Fa-f]*'", re.I)
_IN_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_SPACE = re.compile(r"\s+")
_SAVEPOINT = re.compile(r'^(SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO SAVEPOINT)\s+"?\w+"?', re.I)


def fingerprint(sql: str) -> str:
    """SQL with literals replaced by ?, IN-lists collapsed and whitespace squeezed."""
    text = _HEX.sub("?", sql)
    text = _STRING.sub("?", text)
    text = _NUMBER.sub("?", text)
    text = _IN_LIST.sub("(...)", text)
    text = _SPACE.sub(" ", text).strip()
    text = _SAVEPOINT.sub(lambda m: m.group(1).upper() + " ?", text)
    return text
