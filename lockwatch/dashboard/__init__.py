"""The live dashboard: store aggregates, plotly charts, htmx pages and a websocket relay.

Data flows one way: the store (written by the target project's processes) →
``queries`` (aggregation SQL) → ``charts`` and ``views`` (pages and partials),
and the store → ``relay`` → channel layer → ``consumers`` → browser.
"""
