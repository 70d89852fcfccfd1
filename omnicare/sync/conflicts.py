"""Conflicts parked on the server: who may see them, listing, resolving, and their wire shape."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from omnicare.access.services import (
    access_check,
    may_access,
    visible_patients_cache,
)
from omnicare.core.errors import (
    BadRequest,
    NotFound,
)
from omnicare.core.errors import (
    Conflict as ConflictError,
)
from omnicare.fhir.models import Resource, ResourceVersion
from omnicare.fhir.validation import validate_resource
from pyclient.protocol import (
    MutationResult,
)

from .cursor import User
from .models import Conflict
from .push import compartment_of, write_one

RESOLUTIONS = ("keep-mine", "keep-server", "edited")


# ---------------------------------------------------------------------------------------------------------
# Conflicts
# ---------------------------------------------------------------------------------------------------------


def conflict_may_access(*, user: User, conflict: Conflict, action: str = "read") -> bool:
    """THE rule for who may read (``read``) or resolve (``update``) a stored conflict: its author, or a clinician
    whose role and scope cover ``action`` on the conflict's resource type for EVERY patient it names
    (``access.services.may_access``). Administrators, auditors and staff flags give nothing: a conflict holds
    clinical content (base/ours/theirs). A conflict naming no patient is its author's only."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if conflict.author_id == user.pk:
        return True
    patients = [str(p) for p in conflict.patient_ids or [] if p]
    if not patients:
        return False
    return may_access(user=user, action=action, resource_type=conflict.resource_type, patient_ids=patients)


#: How many of the newest conflicts a non-author listing looks through for ones in the caller's scope.
CONFLICT_SCAN = 5000


def conflicts_list(
    *, user: User, status: str | None = "open", limit: int = 100, device_id: str | None = None
) -> list[Conflict]:
    """Conflicts ``user`` may read (:func:`conflict_may_access`): their own and those of patients in their scope.
    With ``device_id``: only the user's own, stored by pushes of that device."""
    limit = max(1, min(limit, 1000))
    qs = Conflict.objects.all()
    if device_id is not None:
        qs = Conflict.objects.filter(author=user, device_id=device_id)
    if status:
        qs = qs.filter(status=status)
    out: list[Conflict] = []
    with visible_patients_cache():
        for c in qs.select_related("author", "resolved_by").order_by("-created")[:CONFLICT_SCAN]:
            if conflict_may_access(user=user, conflict=c):
                out.append(c)
                if len(out) >= limit:
                    break
    return out


def conflict_get(*, user: User, conflict_id: str, action: str = "read") -> Conflict:
    try:
        qs = Conflict.objects.select_related("author", "resolved_by").filter(pk=conflict_id)
        c = qs.first()
    except Exception:  # not a UUID
        c = None
    if c is None or not conflict_may_access(user=user, conflict=c, action=action):
        raise NotFound("No such conflict")
    return c


def conflict_resolve(
    *,
    user: User,
    conflict_id: str,
    resolution: str,
    resource: dict[str, Any] | None = None,
    base_version: int | None = None,
) -> tuple[Conflict, MutationResult]:
    """Resolve an open conflict: ``keep-mine`` (the parked client edit), ``keep-server`` (no change) or
    ``edited`` (``resource``, a hand-merged version). ``base_version`` is the server version the person saw
    (default: the conflict's ``ours_version``); if the record moved on since, 409 and nothing is written.
    """
    if resolution not in RESOLUTIONS:
        raise BadRequest(f"resolution must be one of {', '.join(RESOLUTIONS)}", expression=["resolution"])
    conflict_get(user=user, conflict_id=conflict_id, action="update")  # author or in scope (404 for others)
    with transaction.atomic():
        c = Conflict.objects.select_for_update().get(pk=conflict_id)
        if c.status != Conflict.OPEN:
            raise ConflictError("This conflict is already resolved")
        rtype, rid = c.resource_type, c.resource_id
        cur = Resource.objects.select_for_update().filter(resource_type=rtype, resource_id=rid).first()
        cur_version = cur.version_id if cur is not None else 0
        live_version = cur_version if cur is not None and not cur.deleted else 0
        expected = base_version if base_version is not None else (c.ours_version or 0)
        if expected != cur_version:
            raise ConflictError(
                f"{rtype}/{rid} changed since (now version {cur_version}); reload and resolve again",
                headers={"ETag": f'W/"{cur_version}"'},
            )
        body: dict[str, Any] | None
        if resolution == "keep-server":
            version: ResourceVersion | None = None
        else:
            if resolution == "keep-mine":
                body = c.theirs
            else:
                if resource is None:
                    raise BadRequest("resolution 'edited' needs the resource", expression=["resource"])
                body = dict(resource)
                body["id"] = rid
                validate_resource(body, expected_type=rtype)
            patients = compartment_of(rtype, rid, body) | compartment_of(
                rtype, rid, cur.body if cur is not None and not cur.deleted else None
            )
            access_check(
                user=user,
                action="update" if live_version else "create",
                resource_type=rtype,
                patient_ids=sorted(patients),
            )
            version = write_one(user, rtype, rid, body, live_version)
        c.status, c.resolution, c.resolved_by, c.resolved_at = (
            Conflict.RESOLVED,
            resolution,
            user,
            timezone.now(),
        )
        c.resolved_version = version.version_id if version is not None else (cur_version or None)
        c.save(update_fields=["status", "resolution", "resolved_by", "resolved_at", "resolved_version"])
    if version is not None:
        res = MutationResult(
            mutation_id=c.mutation_id,
            status="applied",
            version_id=version.version_id,
            resource=None if version.deleted else version.body,
        )
    else:
        res = MutationResult(
            mutation_id=c.mutation_id,
            status="applied",
            version_id=cur_version or None,
            resource=cur.body if cur is not None and not cur.deleted else None,
        )
    return c, res
