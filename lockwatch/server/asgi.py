"""The standalone dashboard's ASGI application, served by daphne.

HTTP goes to Django (with static files served here, as no other server fronts
it); the websocket goes through the origin check and signed-cookie sessions
to the live consumer.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lockwatch.server.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

http = get_asgi_application()  # sets Django up before anything imports models

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from channels.sessions import SessionMiddlewareStack  # noqa: E402

from lockwatch.dashboard.routing import root_websocket_urlpatterns  # noqa: E402
from lockwatch.server.static import StaticFilesHandler  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": StaticFilesHandler(http),
        "websocket": AllowedHostsOriginValidator(
            SessionMiddlewareStack(URLRouter(root_websocket_urlpatterns))
        ),
    }
)
