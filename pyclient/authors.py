"""Who wrote a record: authors are references to the signed-in user's Practitioner (issue 18 item 6).

The app used to write the user name ("dr.adams") as the author's text; the seeded data and every other FHIR
system write ``{"reference": "Practitioner/<id>", "display": "Dr Alice Adams"}``. This module says, once for
device and server, which element of each resource type holds its author and how the device builds that
reference (the chart names authors with ``pyclient.views.fullchart.note_author``). The server (``omnicare.fhir.authors``) checks with the same table that a client
never writes as someone else's Practitioner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["AUTHOR_FIELDS", "author_reference", "author_refs", "practitioner_display", "set_author"]

#: Resource type -> (element, is a list). The elements the app writes (and the server checks).
AUTHOR_FIELDS: Final[Mapping[str, tuple[str, bool]]] = {
    "Observation": ("performer", True),
    "AllergyIntolerance": ("recorder", False),
    "MedicationRequest": ("requester", False),
    "DocumentReference": ("author", True),
    "Condition": ("recorder", False),
    "Immunization": ("performer", True),  # Immunization.performer[].actor
    "Procedure": ("performer", True),  # Procedure.performer[].actor
}
#: Types whose list entries wrap the reference in ``actor`` (performer components).
_ACTOR_WRAPPED: Final = frozenset({"Immunization", "Procedure"})


def author_reference(practitioner_id: str | None, display: str, username: str = "") -> dict[str, str]:
    """The author element the device writes: a Practitioner reference with the person's name; without a known
    Practitioner (a device signed in before the server sent it) only the name, which the server completes."""
    name = (display or username or "clinician").strip()[:200]
    if practitioner_id:
        return {"reference": f"Practitioner/{practitioner_id}", "display": name}
    return {"display": name}


def author_refs(resource_type: str, resource: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The author references of one resource (empty when the type has none or the element is absent)."""
    spec = AUTHOR_FIELDS.get(resource_type)
    if spec is None:
        return []
    element, many = spec
    raw = resource.get(element)
    items = (raw if isinstance(raw, list) else []) if many else ([raw] if raw is not None else [])
    out: list[Mapping[str, Any]] = []
    for item in items:
        if resource_type in _ACTOR_WRAPPED and isinstance(item, Mapping):
            item = item.get("actor")
        if isinstance(item, Mapping):
            out.append(item)
    return out


def set_author(resource_type: str, resource: dict[str, Any], author: Mapping[str, str]) -> None:
    """Replace the author element with ``author`` (in place)."""
    spec = AUTHOR_FIELDS.get(resource_type)
    if spec is None:
        return
    element, many = spec
    value: dict[str, Any] = dict(author)
    if resource_type in _ACTOR_WRAPPED:
        value = {"actor": value}
    resource[element] = [value] if many else value


def practitioner_display(practitioner: Mapping[str, Any]) -> str:
    """A Practitioner's name as authors show it ("Dr. Alice Adams"): prefix, given names, family."""
    names = [n for n in practitioner.get("name") or [] if isinstance(n, Mapping)]
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    if name.get("text") and not (name.get("family") or name.get("given")):
        return str(name["text"])
    parts = [*(str(p) for p in name.get("prefix") or []), *(str(g) for g in name.get("given") or []),
             str(name.get("family") or "")]
    return " ".join(p for p in parts if p).strip()
