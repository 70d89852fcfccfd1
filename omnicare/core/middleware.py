"""Response headers that keep patient data out of caches.

Every answer of the FHIR API, the app APIs and the admin may carry PHI (or who looked at it): it is sent with
``Cache-Control: no-store, private`` so no browser, proxy or shared cache keeps a copy. Static files of the
PWA (app shell, Pyodide) are not touched: the service worker and HTTP caching need them, and they hold no PHI.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest
from django.http.response import HttpResponseBase

PRIVATE_PREFIXES = ("/fhir/", "/api/", "/admin/")
NO_STORE = "no-store, private"


class NoStoreMiddleware:
    """Sets ``Cache-Control: no-store, private`` (and ``Pragma: no-cache``) on /fhir/, /api/ and /admin/."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if request.path_info.startswith(PRIVATE_PREFIXES):
            response["Cache-Control"] = NO_STORE
            response["Pragma"] = "no-cache"
        return response
