"""Who made the server's side of a conflict, and when (issue 18 item 2): shipped with every parked conflict.

The conflict screen must name the other clinician, never "another user" when the server knows. The server
knows who wrote each version (``ResourceVersion.author``, set on THE write path); a version with no writer
(an import) is named by the record's own author reference (its display), as the seeded data carries it.
Each conflict detail gets ``oursAuthor`` (a name) and ``oursAt`` (ISO 8601 UTC, when that version was
written): PROTOCOL.md §5. The details travel unchanged in the push answer, ``GET /api/sync/conflicts`` and
the device's outbox, so every path the device learns a conflict from carries them.
"""

from __future__ import annotations

from typing import Any

from omnicare.fhir.models import Resource, ResourceVersion

#: Reference elements that name who wrote a record, in the order a resource type is likely to carry them.
_AUTHOR_ELEMENTS = ("recorder", "requester", "asserter", "author", "performer")


def _practitioner_name(reference: str) -> str:
    """A Practitioner reference without a display, named from the stored Practitioner ("Alice Adams")."""
    rtype, _, rid = reference.partition("/")
    if rtype != "Practitioner" or not rid:
        return ""
    row = Resource.objects.filter(resource_type="Practitioner", resource_id=rid, deleted=False).first()
    names = [n for n in ((row.body or {}).get("name") or []) if isinstance(n, dict)] if row is not None else []
    if not names:
        return ""
    n = names[0]
    return (str(n.get("text") or "") or " ".join(
        [*(str(g) for g in n.get("given") or []), str(n.get("family") or "")]).strip())[:150]


def _reference_name(body: dict[str, Any] | None) -> str:
    for key in _AUTHOR_ELEMENTS:
        v = (body or {}).get(key)
        v = v[0] if isinstance(v, list) and v else v
        if isinstance(v, dict) and v.get("display"):
            return str(v["display"])[:150]
        if isinstance(v, dict) and v.get("reference"):
            return _practitioner_name(str(v["reference"]))
    return ""


def ours_author(*, resource_type: str, resource_id: str, cur: Resource | None) -> tuple[str, str]:
    """(name, ISO time) of the server's current version; ("", "") when there is none (never written)."""
    if cur is None:
        return "", ""
    name = (
        ResourceVersion.objects.filter(
            resource_type=resource_type, resource_id=resource_id, version_id=cur.version_id
        )
        .values_list("author", flat=True)
        .first()
    ) or ""
    if not name and not cur.deleted:
        name = _reference_name(cur.body)
    return name, cur.last_updated.isoformat().replace("+00:00", "Z")


def with_author(details: list[dict[str, Any]], name: str, at: str) -> list[dict[str, Any]]:
    """The merge's conflict details, each with who wrote the server's side and when."""
    extra = {k: v for k, v in (("oursAuthor", name), ("oursAt", at)) if v}
    return [{**d, **extra} for d in details]
