"""WebSocket Origin check: the page that opens the socket must be OUR origin — scheme, host AND port.

Channels' ``AllowedHostsOriginValidator`` compares only the host name with ALLOWED_HOSTS, so any other
program on the same host (``http://127.0.0.1:9999``) could open ``/ws/sync`` with the user's session cookie.
Here the Origin must equal the ``Host`` the socket was opened on (host and port), or be listed exactly in
``OMNICARE_CSRF_TRUSTED_ORIGINS`` (deployments whose proxy rewrites Host). A socket without an Origin, or
whose Host is not in ALLOWED_HOSTS, is refused. In-process test communicators send no Host header at all;
for those the host-name check of Channels applies.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import AllowedHostsOriginValidator, WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def origin_allowed(*, origin: str | None, host: str | None) -> bool:
    """Pure rule (unit-testable): is a socket from ``origin`` opened on ``host`` ours?"""
    if not origin or origin == "null":
        return False
    if origin in set(getattr(settings, "CSRF_TRUSTED_ORIGINS", ())):
        return True
    if host is None:
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    return parts.netloc.lower() == host.lower()


class SameOriginValidator:
    """ASGI middleware for the websocket protocol: refuses (HTTP 403 at the handshake) foreign origins."""

    def __init__(self, application: Any) -> None:
        self.application = application
        self._hostname_only = AllowedHostsOriginValidator(application)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope.get("type") != "websocket":
            return await self.application(scope, receive, send)
        host = _header(scope, b"host")
        if host is None:  # only in-process test communicators: fall back to the host-name check
            return await self._hostname_only(scope, receive, send)
        if origin_allowed(origin=_header(scope, b"origin"), host=host):
            return await self.application(scope, receive, send)
        denier = WebsocketDenier()
        return await denier(scope, receive, send)
