"""Helpers shared by test modules and benchmarks; tests never import each other.

``servers`` (``lockwatch serve`` and the test project's commands, with a child
process's environment), ``browser`` (Chromium through Playwright), ``dashboard``
(a store with a known story, the standalone server's settings, the websocket),
``layers`` (a real Redis channel layer), ``pipeline``, ``records``, ``lockowners``,
``net`` and ``ws``. Fixtures used by several modules are in ``fixtures`` (a plugin
tests/conftest.py loads); the rest are in tests/conftest.py. Each module imports only
what it needs, so ``bench/`` can use ``net`` and ``ws`` without loading Django's test
utilities.
"""
