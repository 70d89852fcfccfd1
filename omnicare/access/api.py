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

from django.contrib.auth import logout
from django.http import HttpRequest
from django.middleware.csrf import get_token
from ninja import Field, Router, Schema
from ninja.utils import check_csrf

from omnicare.core.errors import Forbidden

from . import services
from .auth import api_auth
from .device_policy import device_policy
from .roles import ROLES, permissions_for, user_roles
from .services import MfaRequired

__all__ = ["MfaRequired", "router"]

router = Router(tags=["auth"])


class LoginIn(Schema):
    username: str = Field(max_length=150)
    password: str = Field(max_length=4096)
    code: str = Field("", max_length=16, description="TOTP code, when the account needs one")
    newPassword: str = Field("", max_length=4096, description="After an administrator's reset: the new password")  # noqa: N815


class MeOut(Schema):
    id: int
    username: str
    displayName: str  # noqa: N815 - wire name
    isStaff: bool  # noqa: N815 - wire name
    scope: str = Field("none", description="Widest patient scope of the user's roles: all | care-team | none "
                                           "(a device asks wide-scope users for a passphrase, not a PIN)")
    # Resource type -> allowed actions from the permission matrix (roles.permissions_for): the app offers only
    # the controls the role allows; the server still checks every write.
    permissions: dict[str, list[str]] = Field(default_factory=dict)
    # Issue 13 item 4: what a device of this user may keep (offlineData false = shared workstation: online only)
    devicePolicy: dict[str, bool] = Field(default_factory=dict)  # noqa: N815 - wire name
    # The user's own Practitioner {"id", "display"} (issue 18 item 6): the device writes authors as references to
    # it; null when the account has none (the server then fills the reference in, or refuses someone else's).
    practitioner: dict[str, str] | None = None
    # Issue 18: for a user who registers patients but joins no care team (front desk), the clinicians the
    # registration form offers as "responsible clinician" ({"id", "display"}); null for everyone else.
    clinicians: list[dict[str, str]] | None = None


def _me(user: Any) -> dict[str, Any]:
    full = (user.get_full_name() or "").strip()
    held = user_roles(user)
    scopes = {ROLES[r].scope for r in held}
    # The widest patient scope of the user's roles: the device asks a passphrase instead of a PIN for "all"
    # when it cannot bind its key to hardware (pyclient.keys.unlock_secret_problem, issue 10 item 16).
    scope = "all" if "all" in scopes else "care-team" if "care-team" in scopes else "none"
    return {"id": user.pk, "username": user.get_username(), "displayName": full or user.get_username(),
            "isStaff": bool(user.is_staff), "scope": scope, "permissions": permissions_for(held),
            "devicePolicy": device_policy(user=user), "practitioner": services.user_practitioner(user=user),
            "clinicians": services.registration_clinicians(user=user)}


def _csrf_or_403(request: HttpRequest) -> None:
    if check_csrf(request) is not None:
        raise Forbidden("CSRF token missing or incorrect")


@router.get("/csrf", auth=None)
def csrf(request: HttpRequest) -> dict[str, str]:
    """Set the CSRF cookie and return the token (send it back as ``X-CSRFToken``)."""
    return {"csrfToken": get_token(request)}


@router.post("/login", auth=None, response=MeOut)
def login_view(request: HttpRequest, payload: LoginIn) -> dict[str, Any]:
    """Sign in (``services.sign_in``: throttling, TOTP, forced password change, audit) and start a session.

    401 on bad credentials; 401 ``mfa-required`` asks for the code; 401 ``password-change-required`` asks
    for ``newPassword`` (after an administrator's reset)."""
    _csrf_or_403(request)
    user = services.sign_in(request=request, username=payload.username, password=payload.password,
                            code=payload.code, new_password=payload.newPassword)
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
