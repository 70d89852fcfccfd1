"""The pull cursor: opaque, signed, bound to the user, naming the scope it was issued for (see services.py's
notes "Pull cursor").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core import signing
from django.db import IntegrityError, transaction

from omnicare.core.errors import (
    BadRequest,
)

from . import scope as scopes
from .models import ScopeSet

type User = Any  # one name for the whole sync engine: a Django user (AbstractBaseUser); Any while Django has no type stubs here

CURSOR_SALT = "omnicare.sync.cursor.v1"


# ---------------------------------------------------------------------------------------------------------
# Cursor
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CursorState:
    seq: int
    scope_id: int
    fill_target: int | None = None
    fill_after: int = 0


def cursor_encode(*, user: User, state: CursorState) -> str:
    data: dict[str, Any] = {"v": 1, "u": user.pk, "s": state.seq, "p": state.scope_id}
    if state.fill_target is not None:
        data["f"] = {"t": state.fill_target, "a": state.fill_after}
    return signing.dumps(data, salt=CURSOR_SALT, compress=True)


def cursor_decode(*, user: User, cursor: str) -> CursorState:
    """Verify and decode a cursor we issued to this user; anything else is a 400."""
    try:
        data = signing.loads(cursor, salt=CURSOR_SALT)
    except signing.BadSignature:
        raise BadRequest(
            "Unknown cursor: not issued by this server (start again without a cursor)", expression=["cursor"]
        ) from None
    if not isinstance(data, dict) or data.get("v") != 1 or data.get("u") != user.pk:
        raise BadRequest("Unknown cursor: not issued to this user", expression=["cursor"])
    fill = data.get("f")
    return CursorState(
        seq=int(data["s"]),
        scope_id=int(data["p"]),
        fill_target=None if fill is None else int(fill["t"]),
        fill_after=0 if fill is None else int(fill["a"]),
    )


def scope_set_for(*, user: User, keys: frozenset[str]) -> ScopeSet:
    digest = scopes.scope_digest(keys)
    row = ScopeSet.objects.filter(user=user, digest=digest).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            return ScopeSet.objects.create(user=user, digest=digest, keys=sorted(keys))
    except IntegrityError:
        return ScopeSet.objects.get(user=user, digest=digest)


def scope_keys_of(*, user: User, scope_id: int) -> frozenset[str]:
    row = ScopeSet.objects.filter(pk=scope_id, user=user).first()
    if row is None:
        raise BadRequest("Unknown cursor: its scope is not known here", expression=["cursor"])
    return frozenset(row.keys)


