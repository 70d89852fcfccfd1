"""Session lifetime: an idle timeout and an absolute timeout for the PWA's cookie sessions.

Bearer tokens are not sessions and are unaffected (they have their own expiry). Timestamps
live in the session itself; ``oc_seen`` is rewritten at most once a minute to spare the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse

STARTED, SEEN = "oc_started", "oc_seen"


def session_started(request: HttpRequest, now: float | None = None) -> None:
    t = time.time() if now is None else now
    request.session[STARTED] = t
    request.session[SEEN] = t


def session_is_expired(session: Any, now: float | None = None) -> bool:
    """True once a session passed its idle or absolute limit (WebSocket consumers call this per message)."""
    t = time.time() if now is None else now
    idle = int(getattr(settings, "OMNICARE_SESSION_IDLE_SECONDS", 900))
    absolute = int(getattr(settings, "OMNICARE_SESSION_ABSOLUTE_SECONDS", 12 * 3600))
    started, seen = session.get(STARTED), session.get(SEEN)
    if started is None or seen is None:
        return False
    return t - float(seen) > idle or t - float(started) > absolute


class SessionTimeoutMiddleware:
    """Log the user out after OMNICARE_SESSION_IDLE_SECONDS idle or OMNICARE_SESSION_ABSOLUTE_SECONDS total."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and hasattr(request, "session"):
            now = time.time()
            seen = request.session.get(SEEN)
            if request.session.get(STARTED) is None or seen is None:
                session_started(request, now)
            elif session_is_expired(request.session, now):
                logout(request)  # flushes the session; the request continues as anonymous
            elif now - float(seen) > 60:
                request.session[SEEN] = now
        return self.get_response(request)
