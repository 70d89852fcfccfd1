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

**One hop, start to close.** Django's ``handle`` makes three hops per request: ``request_started`` (its receivers
are sync: ``close_old_connections``, ``reset_queries``), the chain, and ``response.close()`` (``request_finished``:
the connection back to the pool) after the body is sent. Here the signal and the chain share the hop, and a
response whose body is already in memory (not streaming) is closed in that hop too, before it is sent: its bytes do
not change, and the pooled connection is free for the next request one send earlier. Streaming responses
(bulk export files) are still closed after their last chunk, as Django does.

**Lean chain for bearer-only FHIR requests.** A request to /fhir/ that carries ``Authorization: Bearer`` and no
``Cookie`` header at all runs a second chain built from ``settings.MIDDLEWARE`` without the middleware that only
acts on cookies or on the cookie session's user: sessions, CSRF, authentication, the session timeout, messages —
and WhiteNoise (no static file lives under /fhir/). With no cookie they could only find an empty session and an
anonymous user; the bearer authenticator (``access.auth``) sets ``request.user`` itself, and the session
authenticator behind it sees no user and declines (401), as it does on the full chain. ``request.session`` is never
created, so such a request cannot touch the session store. Every header-setting middleware (security, no-store,
CSP, X-Frame-Options), the access log, timing, gzip and CommonMiddleware stay, in the same order. Any request with
a cookie (the PWA, the admin) takes the full chain, CSRF included.

**Checked against Django.** :meth:`ReusedThreadASGIHandler.handle` is a copy of Django's ``ASGIHandler.handle``
with one change (the hop). A Django whose ``handle`` differs from the one copied (its source's sha256,
:data:`DJANGO_HANDLE_DIGEST`) gets Django's own ``handle`` back, which calls :meth:`get_response_async` (the
chain in one hop, still on the reused thread) until this copy is compared with the new one: a fix in Django's
request handling is never silently left out.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import set_script_prefix

log = logging.getLogger("omnicare.core")

#: sha256 of the source of ``django.core.handlers.asgi.ASGIHandler.handle`` as Django 6.1.3 ships it: the
#: version :meth:`ReusedThreadASGIHandler.handle` copies (see the module docstring).
DJANGO_HANDLE_DIGEST = "c91f27c7fcdc3fff4f1c7082e91cb30f0bfaa5781ca632a116b1d9e607fd752a"


def django_handle_digest() -> str:
    return hashlib.sha256(inspect.getsource(ASGIHandler.handle).encode()).hexdigest()


#: Left out of the lean chain (see the module docstring): they act only on cookies or the cookie session's user.
COOKIE_ONLY_MIDDLEWARE = frozenset({
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "omnicare.access.middleware.SessionTimeoutMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
})
LEAN_PREFIXES = ("/fhir/",)


def is_bearer_only(request: HttpRequest) -> bool:
    """A /fhir/ request with a bearer token and no cookie (what API clients and wrk send)."""
    meta = request.META
    return (
        not meta.get("HTTP_COOKIE")  # absent or empty
        and meta.get("HTTP_AUTHORIZATION", "")[:7].lower() == "bearer "
        and request.path_info.startswith(LEAN_PREFIXES)
    )


class LeanHandler(BaseHandler):
    """``settings.MIDDLEWARE`` minus :data:`COOKIE_ONLY_MIDDLEWARE`, loaded in sync mode."""

    def load_middleware(self, is_async: bool = False) -> None:
        # BaseHandler.load_middleware reads settings.MIDDLEWARE; give it the lean list for the duration (at
        # start-up, before any request is served) rather than copying Django's loader.
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = [m for m in full if m not in COOKIE_ONLY_MIDDLEWARE]
        try:
            super().load_middleware(is_async=False)
        finally:
            settings.MIDDLEWARE = full


#: Idle threads kept for reuse; more requests in flight than this start threads that end with their request.
IDLE_MAX = 64


class ReusedThreadASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        # Not ASGIHandler.__init__, which loads the chain in async mode (middleware made twice: WhiteNoise
        # scans the static files at start-up).
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)  # the sync chain (see the module docstring)
        self.lean = LeanHandler()
        self.lean.load_middleware(is_async=False)
        self._idle: list[ThreadPoolExecutor] = []
        self._lock = threading.Lock()
        self.own_handle = django_handle_digest() == DJANGO_HANDLE_DIGEST
        if not self.own_handle:
            log.warning("Django's ASGIHandler.handle is not the one omnicare.core.asgi_handler copies: serving "
                        "with Django's own (one more thread hop per request) until the copy is checked")

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

    def _serve(self, request: HttpRequest, scope: dict[str, Any]) -> HttpResponseBase:
        """On the request's thread: ``request_started``, the chain (lean or full), and the close of an in-memory
        response (see the module docstring)."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        handler = self.lean if is_bearer_only(request) else self
        response = handler.get_response(request)
        response._handler_class = self.__class__  # type: ignore[attr-defined]  # as Django's run_get_response
        if not response.streaming:
            response.close()
            response._omnicare_closed = True  # type: ignore[attr-defined]
        return response

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Django's ``ASGIHandler.handle`` (6.1.3) with the one hop of :meth:`_serve`."""
        if not self.own_handle:
            await super().handle(scope, receive, send)
            return
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        with closing(body_file):
            set_script_prefix(get_script_prefix(scope))
            request, error_response = self.create_request(scope, body_file)
            if request is None:
                await signals.request_started.asend(sender=self.__class__, scope=scope)
                body_file.close()
                await self.send_response(error_response, send)
                await sync_to_async(error_response.close)()
                return

            class RequestProcessed(Exception):
                pass

            response = None
            try:
                try:
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self.listen_for_disconnect(receive))
                        response = await sync_to_async(self._serve, thread_sensitive=True)(request, scope)
                        await self.send_response(response, send)
                        raise RequestProcessed
                except* (RequestProcessed, RequestAborted):
                    pass
            except BaseExceptionGroup as exception_group:
                if len(exception_group.exceptions) == 1:
                    raise exception_group.exceptions[0] from None
                raise

            if response is None:
                await signals.request_finished.asend(sender=self.__class__)
            elif not getattr(response, "_omnicare_closed", False):
                await sync_to_async(response.close)()

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        """The whole sync chain in one hop (``BaseHandler.get_response``: urlconf, middleware, view, the
        4xx/5xx log line, the request's closer), on this request's thread."""
        handler = self.lean if is_bearer_only(request) else self
        # Django's own handle (a Django this copy was not checked against) comes here; ours goes through _serve.
        return await sync_to_async(handler.get_response, thread_sensitive=True)(request)

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
