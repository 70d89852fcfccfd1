"""Authentication and the single authorization check every API path goes through.

``access_check`` is THE place where the server decides whether a user may do an
action on a resource type (and, for patient data, on which patients). Roles,
care-team scope and break-the-glass extend this function; callers never decide.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.utils import timezone

from omnicare.core.errors import Forbidden, NotAuthenticated

from .models import ApiToken

ACTIONS = frozenset({"read", "vread", "search", "history", "create", "update", "delete"})


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_create(*, user: AbstractBaseUser, name: str, expires: datetime | None = None) -> str:
    """Create a bearer token for ``user`` and return it (shown once; only its hash is kept)."""
    token = "oc_" + secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, name=name, token_hash=_hash(token), expires=expires)
    return token


def token_authenticate(*, token: str) -> AbstractBaseUser | None:
    """Return the active user owning ``token``, or None (unknown, revoked, expired or inactive)."""
    row = ApiToken.objects.select_related("user").filter(token_hash=_hash(token), revoked=False).first()
    if row is None or (row.expires is not None and row.expires <= timezone.now()):
        return None
    if not row.user.is_active:
        return None
    return row.user


def access_check(
    *,
    user: AbstractBaseUser | AnonymousUser | None,
    action: str,
    resource_type: str,
    patient_ids: Iterable[str] = (),
) -> None:
    """Raise unless ``user`` may do ``action`` on ``resource_type`` (for these patients).

    Today: any active, authenticated user. The access-control work extends this with
    roles, care-team scope and break-the-glass grants; every caller already passes what
    that needs.
    """
    if user is None or not user.is_authenticated or not user.is_active:
        raise NotAuthenticated("Authentication required")
    if action not in ACTIONS:
        raise Forbidden(f"Unknown action {action!r}")
