"""Django's ASGI handler, with the middleware chain run in one hop and the request's thread reused.

**One hop.** Our middleware is sync (access log, timing, session timeout, no-store), Django's is both. Loaded in
async mode, Django adapts at every switch: the chain went async → sync (our middleware) → async (``async_to_sync``
around Django's ``AuthenticationMiddleware`` and the rest, each running its ``process_request`` through
``sync_to_async``) → sync (the view): about five thread hops per request, more CPU than the FHIR read itself.
Here the chain is loaded in sync mode, exactly as under WSGI and as the test client runs it in every test, and
called with one ``sync_to_async``.

**Reused thread.** Django runs each request's sync part (middleware, view, ORM) in a ``ThreadSensitiveContext`` of its own: a new
one-thread executor per request, shut down at the end by yet another thread started to join it. Two thread
starts and a join per request were a fifth of a FHIR read's CPU (``bench/request_profile.py --cprofile-asgi``).
Here each request leases an idle one-thread executor for its whole duration (asgiref's
``ThreadSensitiveContext(executor=...)``): still one thread per request in flight, never shared by two at once,
so the thread-local database connection and the request's thread-sensitive calls behave exactly as before; the
connection is closed (back to the pool) at ``request_finished`` as before. Everything else is Django's handler.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.http import HttpRequest
from django.http.response import HttpResponseBase

#: Idle threads kept for reuse; more requests in flight than this start threads that end with their request.
IDLE_MAX = 64


class ReusedThreadASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        # Not ASGIHandler.__init__, which loads the chain in async mode (middleware made twice: WhiteNoise
        # scans the static files at start-up).
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)  # the sync chain (see the module docstring)
        self._idle: list[ThreadPoolExecutor] = []
        self._lock = threading.Lock()

    def _lease(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="omnicare-request")

    def _release(self, executor: ThreadPoolExecutor) -> None:
        with self._lock:
            if len(self._idle) < IDLE_MAX:
                self._idle.append(executor)
                return
        executor.shutdown(wait=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        """The whole sync chain in one hop (``BaseHandler.get_response``: urlconf, middleware, view, the
        4xx/5xx log line, the request's closer), on this request's thread."""
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self._lease()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            # A request whose sync part is still running (cancelled, client gone) keeps its thread: reuse it only
            # once that work is done, so two requests never share it at once.
            fut = executor.submit(lambda: None)
            fut.add_done_callback(lambda _f: self._release(executor))
