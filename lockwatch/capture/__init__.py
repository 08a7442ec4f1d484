"""Capture: what each instrumented connection did, appended raw to the pipeline.

``probe.Probe`` sits on every connection (Django's backend in ``lockwatch.db``, and
``sqlite3.connect`` through ``rawsqlite``); ``busyhandler`` times its lock waits exactly;
``holding`` and ``transactions`` keep its slot in the live holder table; ``quick`` is the
path for statements that neither waited nor failed. Nothing here imports the store.
"""
