"""Anti-rollback check for devices (issue 17, PROTOCOL.md 6.5): "here are the versions I hold".

A device's encrypted store can be rolled back (an older row restored with its older version) or lose
rows in ways no local check can see. After a complete pull the device sends the (type, id, version)
triples it holds -- or, for records it quarantined, version 0 = "send me your current copy" -- and
the server answers with the current state of every one it holds an older (or no valid) copy of, and
the ones the caller may no longer see (``gone``: delete locally). Read-only; every answer is limited to
the caller's sync scope exactly like a pull.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Q

from omnicare.core.errors import BadRequest, Forbidden
from omnicare.fhir.models import Resource, ResourcePatient

from . import scope as scopes
from .pull import readable_types

MAX_HELD = 1000


@dataclass(frozen=True)
class Held:
    resource_type: str
    id: str
    version: int


def parse_verify(data: Any) -> tuple[str, list[Held]]:
    """``{"deviceId": str, "held": [[type, id, version], ...]}`` -> (device id, held); 400 on anything else."""
    if not isinstance(data, dict) or not isinstance(data.get("deviceId"), str) or not data["deviceId"]:
        raise BadRequest("deviceId must be a non-empty string", expression=["deviceId"])
    raw = data.get("held")
    if not isinstance(raw, list) or len(raw) > MAX_HELD:
        raise BadRequest(f"held must be a list of at most {MAX_HELD} [type, id, version]", expression=["held"])
    out = []
    for n, item in enumerate(raw):
        ok = (isinstance(item, list) and len(item) == 3 and all(isinstance(x, str) and 0 < len(x) <= 64
                                                                 and "\x00" not in x for x in item[:2])
              and isinstance(item[2], int) and not isinstance(item[2], bool) and 0 <= item[2] < 2**31)
        if not ok:
            raise BadRequest(f"held[{n}] must be [type, id, version >= 0]", expression=[f"held[{n}]"])
        out.append(Held(item[0], item[1], item[2]))
    return data["deviceId"], out


def verify_held(*, user: Any, held: list[Held]) -> dict[str, Any]:
    """``{"changes": [...pull-shaped, newer than held...], "gone": [{resourceType, id}], "stale": n}``.

    Plus ``patients`` (the patients whose records are returned: for the audit event, not sent).
    """
    if user is None or not user.is_authenticated:
        raise Forbidden("Authentication required")
    if not held:
        return {"changes": [], "gone": [], "stale": 0, "patients": []}
    patients, others = scopes.split_keys(scopes.scope_keys(user=user))
    readable = readable_types(user)
    cond = Q()
    for h in held:
        cond |= Q(resource_type=h.resource_type, resource_id=h.id)
    rows = {(r.resource_type, r.resource_id): r for r in Resource.objects.filter(cond)}
    linked: dict[int, set[str]] = {}
    for rid, pid in ResourcePatient.objects.filter(resource__in=list(rows.values())).values_list(
            "resource_id", "patient_id"):
        linked.setdefault(rid, set()).add(pid)
    changes, gone = [], []
    stale = 0
    read_patients: set[str] = set()
    for h in held:
        row = rows.get((h.resource_type, h.id))
        visible = row is not None and readable(h.resource_type) and (
            (h.resource_type, h.id) in others or bool(linked.get(row.pk, set()) & patients))
        if not visible:
            gone.append({"resourceType": h.resource_type, "id": h.id})
            continue
        assert row is not None
        if h.version and row.version_id <= h.version:
            continue
        if h.version:
            stale += 1
        read_patients |= linked.get(row.pk, set()) & patients
        changes.append({"seq": 0, "resourceType": row.resource_type, "id": row.resource_id,
                        "versionId": row.version_id, "deleted": row.deleted,
                        "resource": None if row.deleted else row.body})
    return {"changes": changes, "gone": gone, "stale": stale, "patients": sorted(read_patients)}
