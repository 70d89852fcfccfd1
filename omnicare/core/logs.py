"""Access logging without PHI: method, path (never the query string), status and duration.

Query strings carry patient data (``Patient?family=Lefèvre&birthdate=1950``, MRNs, patient ids, cursors), so
they never reach a log:

* :class:`AccessLogMiddleware` is OmniCare's access log (logger ``omnicare.http``): ``GET /fhir/R4/Patient
  200 12ms``. ``make serve``, the Dockerfile and the test server run uvicorn with ``--no-access-log``.
* :class:`StripQueryFilter` is attached (settings ``LOGGING``) to the access loggers of uvicorn
  (``uvicorn.access``) and daphne (``django.channels.server``), so a server started without that flag still
  logs paths only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.http import HttpRequest
from django.http.response import HttpResponseBase

log = logging.getLogger("omnicare.http")


def path_only(target: object) -> object:
    """``/fhir/R4/Patient?family=X`` -> ``/fhir/R4/Patient`` (anything that is not a string is kept)."""
    if isinstance(target, str):
        return target.split("?", 1)[0].split("#", 1)[0]
    return target


class StripQueryFilter(logging.Filter):
    """Removes the query string from access-log records (uvicorn puts the full path in ``args[2]``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(path_only(a) if isinstance(a, str) and "?" in a else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: path_only(v) if isinstance(v, str) and "?" in v else v for k, v in record.args.items()}
        if isinstance(record.msg, str) and "?" in record.msg and not record.args:
            record.msg = " ".join(str(path_only(w)) if w.startswith(("/", '"/')) else w for w in record.msg.split(" "))
        return True


class AccessLogMiddleware:
    """One INFO line per request on ``omnicare.http``: method, path without query string, status, ms."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        response = self.get_response(request)
        if log.isEnabledFor(logging.INFO):
            log.info("%s %s %s %dms", request.method, request.path_info, response.status_code,
                     (time.perf_counter() - started) * 1000)
        return response
