"""Static files for the standalone server: Django's handler, with escapes refused as a 404.

Django's handler turns only ``Http404`` into a response. A path that leaves
the static directories (``/static/../../etc/passwd``) makes ``safe_join``
raise ``SuspiciousFileOperation``, which escaped as a 500 and a traceback.
"""

from __future__ import annotations

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.exceptions import SuspiciousOperation
from django.http import FileResponse, Http404, HttpRequest


class StaticFilesHandler(ASGIStaticFilesHandler):
    def serve(self, request: HttpRequest) -> FileResponse:
        try:
            return super().serve(request)
        except SuspiciousOperation:
            raise Http404("no such static file") from None
