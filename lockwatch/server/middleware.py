"""Cookies marked ``Secure`` whenever the request came over https.

Django marks them only by setting (``SESSION_COOKIE_SECURE``), which would break
the plain-http dashboard on 127.0.0.1; behind an https proxy (``lockwatch serve
--proxy-headers``) the cookies went out without it. Here each response decides by
its own request's scheme.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseBase
from django.utils.deprecation import MiddlewareMixin


class SecureCookies(MiddlewareMixin):  # the mixin serves sync and async stacks alike
    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        if request.is_secure():
            for morsel in response.cookies.values():
                morsel["secure"] = True
        return response
