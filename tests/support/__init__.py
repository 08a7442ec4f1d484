"""Helpers shared by test modules and benchmarks (fixtures live in tests/conftest.py).

Each module imports only what it needs, so ``bench/`` can use ``net`` and ``ws``
without loading Django's test utilities.
"""
