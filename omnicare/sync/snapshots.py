"""Snapshots: the first sync of a large scope, built by a Celery job."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable

from django.db import transaction
from django.utils import timezone

from omnicare.audit.services import audit_record
from omnicare.core.errors import (
    BadRequest,
    NotFound,
)
from omnicare.fhir.services import feed_head
from pyclient.protocol import (
    Change,
)

from . import scope as scopes
from .cursor import CursorState, User, cursor_decode, cursor_encode, scope_set_for
from .devices import device_register
from .models import Snapshot
from .pull import fill_page, readable_types

# ---------------------------------------------------------------------------------------------------------
# Snapshots (first sync of a large scope, built by a Celery job)
# ---------------------------------------------------------------------------------------------------------


def snapshot_request(*, user: User, device_id: str) -> Snapshot:
    """Create a pending snapshot for the caller's device (the caller enqueues :func:`snapshot_build`)."""
    device_register(user=user, device_id=device_id)
    return Snapshot.objects.create(user=user, device_id=device_id)


def _fill_all(
    keys: frozenset[str], at_seq: int, readable: Callable[[str], bool], page: int = 2000
) -> Iterable[Change]:
    after = 0
    while True:
        rows, after, more = fill_page(
            keys=keys, at_seq=at_seq, after_seq=after, limit=page, readable=readable
        )
        yield from rows
        if not more:
            return


def snapshot_build(*, snapshot_id: str) -> Snapshot:
    """Build the gzip image: the scope's current state at a feed position, and the cursor to continue from.

    Idempotent: a ready snapshot is left alone; a re-run of a pending one rebuilds it from scratch.
    """
    snap = Snapshot.objects.select_related("user").get(pk=snapshot_id)
    if snap.status == Snapshot.READY:
        return snap
    user = snap.user
    keys = scopes.scope_keys(user=user)
    at = feed_head()
    scope_row = scope_set_for(user=user, keys=keys)
    cursor = cursor_encode(user=user, state=CursorState(at, scope_row.pk))
    changes = [c.to_json() for c in _fill_all(keys, at, readable_types(user))]
    raw = json.dumps({"cursor": cursor, "seq": at, "changes": changes}, separators=(",", ":")).encode()
    data = gzip.compress(raw, compresslevel=6, mtime=0)

    with transaction.atomic():
        snap.status, snap.seq, snap.count, snap.cursor = Snapshot.READY, at, len(changes), cursor
        snap.data, snap.size, snap.finished = data, len(data), timezone.now()
        snap.save()
        audit_record(user=user, action="snapshot-build", resource_type="Snapshot", resource_id=str(snap.id),
                     patient_ids=sorted(scopes.split_keys(keys)[0]), device_id=snap.device_id or None,
                     detail={"changes": len(changes)})
    return snap


def snapshot_patients_if_current(*, user: User, snap: Snapshot) -> list[str] | None:
    """The snapshot's patients if it was built for the user's *current* scope, else None.

    A snapshot is an image of a scope at build time: once the scope changed (a break-the-glass grant
    expired, a care team ended) it must not be served any more (the device asks for a new one).
    """
    keys = scopes.scope_keys(user=user)
    try:
        built_for = cursor_decode(user=user, cursor=snap.cursor).scope_id
    except BadRequest:
        return None
    if scope_set_for(user=user, keys=keys).pk != built_for:
        return None
    return sorted(scopes.split_keys(keys)[0])


def snapshot_get(*, user: User, snapshot_id: str) -> Snapshot:
    try:
        snap = Snapshot.objects.filter(pk=snapshot_id, user=user).first()
    except Exception:
        snap = None
    if snap is None:
        raise NotFound("No such snapshot")
    return snap
