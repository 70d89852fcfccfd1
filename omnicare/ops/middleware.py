"""Request timing: one observation per request, for Prometheus and the dashboard's per-minute rollup."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from . import metrics


class RequestTimingMiddleware:
    """Times every request that reaches Django (WhiteNoise static files are answered before it)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.flush_every = float(getattr(settings, "OMNICARE_OPS_FLUSH_SECONDS", 5.0))

    def __call__(self, request: HttpRequest) -> HttpResponse:
        t0 = time.perf_counter()
        response = self.get_response(request)
        ms = (time.perf_counter() - t0) * 1000.0
        match = getattr(request, "resolver_match", None)
        route = (match.route if match is not None and match.route else "(unmatched)")[:120]
        method = request.method or "GET"
        status = response.status_code
        metrics.HTTP_REQUESTS.labels(route, method, str(status)).inc()
        metrics.HTTP_LATENCY.labels(route).observe(ms / 1000.0)
        metrics.BUFFER.add(route=route, method=method, status=status, ms=ms, at=time.time())
        if metrics.BUFFER.due(self.flush_every):
            metrics.BUFFER.flush()
        return response
