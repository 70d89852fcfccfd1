"""Django's 500 handler, with one exception: an unreachable database (raised before any view, e.g. by
session or token middleware) is a quick 503 with ``Retry-After``, like the same failure inside the API."""

from __future__ import annotations

import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.views.defaults import server_error as django_server_error

from omnicare.api import unavailable_response


def server_error(request: HttpRequest) -> HttpResponse:
    if isinstance(sys.exc_info()[1], (OperationalError, InterfaceError)):
        return unavailable_response()
    return django_server_error(request)
