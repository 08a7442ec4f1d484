"""One settings module per alternative; ``base`` holds what they share.

The database file comes from $BENCH_DB and lockwatch's store from $BENCH_STORE, so each
worker process gets its own files in the run's temp dir.
"""
