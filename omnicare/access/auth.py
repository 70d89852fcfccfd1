"""django-ninja authenticators: the PWA's session cookie (with CSRF) or an API bearer token."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer, SessionAuth

from .roles import token_only
from .services import (
    SESSION_DEVICE,
    SESSION_REVOKED,
    DeviceRevoked,
    revoked_device_contact,
    session_device_check,
    token_authenticate,
    token_device_revoked_check,
    token_hash,
)


class BearerAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        user = token_authenticate(token=token)
        if user is None:
            token_device_revoked_check(token=token)  # a revoked device's token is told to wipe (403), not 401
        if user is not None:
            request.user = user
            request._omnicare_token_hash = token_hash(token)  # type: ignore[attr-defined]  # device binding
            request._omnicare_token_device = getattr(user, "_omnicare_token_device", None)  # type: ignore[attr-defined]
        return user


class ActiveSessionAuth(SessionAuth):
    """Session cookie auth for the PWA; CSRF is enforced for unsafe methods by ninja."""

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.is_active and not token_only(user):
            if request.session.get(SESSION_REVOKED):
                revoked_device_contact(user=user, device_id=str(request.session.get(SESSION_DEVICE) or ""))
                raise DeviceRevoked()  # the session of a revoked device: no data, and the order to wipe
            session_device_check(request=request)
            return user
        return None


# Bearer first: API clients without cookies must not be asked for CSRF.
api_auth = [BearerAuth(), ActiveSessionAuth()]
