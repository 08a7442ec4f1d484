"""Statement classes and fingerprints."""

from __future__ import annotations

import re

_FIRST_WORD = re.compile(r"\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*([A-Za-z]+)", re.S)

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

_cache: dict[str, str] = {}
_CACHE_MAX = 4096


def _classify(sql: str) -> str:
    m = _FIRST_WORD.match(sql)
    if not m:
        return "other"
    word = m.group(1).upper()
    if word == "WITH":
        # A CTE may end in a write.
        body = sql.upper()
        for verb in ("INSERT", "UPDATE", "DELETE", "REPLACE"):
            if re.search(rf"\)\s*{verb}\b", body):
                return "write"
        return "read"
    return _CLASS_OF_WORD.get(word, "other")


def statement_class(sql: str) -> str:
    cls = _cache.get(sql)
    if cls is None:
        cls = _classify(sql)
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[sql] = cls
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
