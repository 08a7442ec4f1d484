"""Websocket routes. The socket lives at the dashboard's own URL plus ``ws/``.

Mounted in a project at ``lockwatch/``::

    from channels.auth import AuthMiddlewareStack
    from channels.security.websocket import AllowedHostsOriginValidator
    from lockwatch.dashboard.routing import websocket_urlpatterns

    "websocket": AllowedHostsOriginValidator(
        AuthMiddlewareStack(URLRouter([*websocket_urlpatterns, ...]))
    )

Mounted elsewhere, route ``<mount>/ws/`` to ``LiveConsumer.as_asgi()``.
"""

from __future__ import annotations

from django.urls import path

from .consumers import LiveConsumer

live = LiveConsumer.as_asgi()

websocket_urlpatterns = [path("lockwatch/ws/", live)]
# The standalone server mounts the dashboard at the root.
root_websocket_urlpatterns = [path("ws/", live)]
