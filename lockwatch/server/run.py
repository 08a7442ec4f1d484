"""``lockwatch serve``: daphne in this process, with an access log that shows no token.

daphne writes one access-log line per request to stdout, with the query string:
``GET /?token=…`` put the token in every log that keeps the server's output. Here
each ``token=`` value is replaced by ``[redacted]`` and each line is flushed (a
redirected stdout otherwise holds them back).
"""

from __future__ import annotations

import re
from typing import Any

from daphne.access import AccessLogGenerator
from daphne.cli import CommandLineInterface
from daphne.server import Server

from lockwatch.conf import Alerts

_TOKEN = re.compile(r"([?&;]token=)[^&;#\s]*", re.IGNORECASE)


def redact(path: str) -> str:
    """`path` with the value of every ``token`` query parameter replaced."""
    return _TOKEN.sub(r"\1[redacted]", path)


class AccessLog(AccessLogGenerator):
    def __call__(self, protocol: str, action: str, details: dict[str, Any]) -> None:
        if "path" in details:
            details = {**details, "path": redact(str(details["path"]))}
        super().__call__(protocol, action, details)

    def write_entry(self, *args: Any, **kwargs: Any) -> None:
        super().write_entry(*args, **kwargs)
        self.stream.flush()


class _Server(Server):
    def __init__(self, *args: Any, action_logger: Any = None, **kwargs: Any) -> None:
        if isinstance(action_logger, AccessLogGenerator):
            action_logger = AccessLog(action_logger.stream)
        super().__init__(*args, action_logger=action_logger, **kwargs)


def serve(
    host: str,
    port: int,
    proxy_headers: bool = False,
    alerts: Alerts | None = None,
    dashboard: str | None = None,
) -> None:
    """Run daphne on host:port until it is stopped (settings come from the environment).

    With ``alerts``, their rules are evaluated on a thread of this process; ``dashboard``
    is the address alerts link to when ALERTS has no DASHBOARD_URL."""
    import django
    from django.conf import settings
    from django.utils.module_loading import import_string

    django.setup()
    if alerts is not None:
        from lockwatch.conf import get_config
        from lockwatch.server import alerts as alerting

        alerting.start(get_config().store, alerts, dashboard)
    # Sessions that expired since the last run: their files would otherwise stay.
    import_string(f"{settings.SESSION_ENGINE}.SessionStore").clear_expired()
    cli = CommandLineInterface()
    cli.server_class = _Server
    argv = ["-b", host, "-p", str(port)]
    if proxy_headers:
        argv.append("--proxy-headers")  # client address and scheme from X-Forwarded-*
    cli.run([*argv, "lockwatch.server.asgi:application"])
