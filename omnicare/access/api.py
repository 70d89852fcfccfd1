"""Session sign-in for the PWA (/api/auth/).

The PWA signs in with username/password and then talks to /api/sync/ and
/fhir/R4/ with the session cookie (+ CSRF header on unsafe methods). Login is
CSRF-protected too (login CSRF would sign a victim into an attacker's account):
the app first calls ``GET csrf`` which sets the ``csrftoken`` cookie and returns
the token. Sign-in is throttled per username and per address
(``services.login_attempt_check``: 429 + Retry-After) and asks for a TOTP code
when ``services.mfa_required`` says so (401 with details code ``mfa-required``
until the code is sent; a wrong code counts as a failed sign-in).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate, login, logout
from django.http import HttpRequest
from django.middleware.csrf import get_token
from ninja import Field, Router, Schema
from ninja.utils import check_csrf

from omnicare.core.errors import Forbidden, NotAuthenticated

from . import roles as rbac
from . import services
from .auth import api_auth

router = Router(tags=["auth"])


class LoginIn(Schema):
    username: str = Field(max_length=150)
    password: str = Field(max_length=4096)
    code: str = Field("", max_length=16, description="TOTP code, when the account needs one")


class MfaRequired(NotAuthenticated):
    """Password accepted, second factor missing or wrong: the sign-in screen asks for the code."""

    def __init__(self, diagnostics: str) -> None:
        super().__init__(diagnostics)

    def outcome(self) -> dict[str, Any]:
        out = super().outcome()
        out["issue"][0]["details"] = {
            "coding": [{"system": "urn:omnicare:auth", "code": "mfa-required"}], "text": "mfa-required"}
        return out


class MeOut(Schema):
    id: int
    username: str
    displayName: str  # noqa: N815 - wire name
    isStaff: bool  # noqa: N815 - wire name


def _me(user: Any) -> dict[str, Any]:
    full = (user.get_full_name() or "").strip()
    return {"id": user.pk, "username": user.get_username(), "displayName": full or user.get_username(),
            "isStaff": bool(user.is_staff)}


def _csrf_or_403(request: HttpRequest) -> None:
    if check_csrf(request) is not None:
        raise Forbidden("CSRF token missing or incorrect")


@router.get("/csrf", auth=None)
def csrf(request: HttpRequest) -> dict[str, str]:
    """Set the CSRF cookie and return the token (send it back as ``X-CSRFToken``)."""
    return {"csrfToken": get_token(request)}


@router.post("/login", auth=None, response=MeOut)
def login_view(request: HttpRequest, payload: LoginIn) -> dict[str, Any]:
    """Check the password and start a session (cookie). 401 on bad credentials."""
    _csrf_or_403(request)
    ip = str(request.META.get("REMOTE_ADDR") or "")
    username = payload.username.strip()
    services.login_attempt_check(username=username, ip=ip)  # 429 + Retry-After while locked
    user = authenticate(request, username=username, password=payload.password)
    if user is None or not user.is_active:
        services.login_attempt_record(username=username, ip=ip, success=False)
        # One message for unknown user and wrong password: no account enumeration.
        raise NotAuthenticated("Wrong username or password")
    if rbac.token_only(user):  # integrations use bearer tokens; they never hold a UI session
        services.login_attempt_record(username=username, ip=ip, success=False)
        raise NotAuthenticated("Wrong username or password")
    if services.mfa_required(user=user):
        if not payload.code.strip():
            # Not a failure (the password was right) and not a session yet: ask for the code.
            raise MfaRequired("Enter the 6-digit code from your authenticator app")
        if not services.totp_verify(user=user, code=payload.code):
            services.login_attempt_record(username=username, ip=ip, success=False)
            raise MfaRequired("That verification code is not correct")
    services.login_attempt_record(username=username, ip=ip, success=True, user=user)
    login(request, user)  # rotates the session key and the CSRF token
    get_token(request)
    return _me(user)


@router.post("/logout", auth=None)
def logout_view(request: HttpRequest) -> dict[str, bool]:
    """End the session (idempotent)."""
    _csrf_or_403(request)
    logout(request)
    return {"ok": True}


@router.get("/me", auth=api_auth, response=MeOut)
def me(request: HttpRequest) -> dict[str, Any]:
    """Who is signed in (401 when nobody)."""
    return _me(request.auth)
