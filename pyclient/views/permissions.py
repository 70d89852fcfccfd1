"""What the signed-in user's role lets them do, as the server's permission matrix says.

The server sends ``permissions`` (resource type -> allowed actions) with the sign-in answer
(``omnicare.access.roles.permissions_for``: the one rule, in one place). The device keeps that copy and asks
it before offering a control, so a nurse is never shown "Start medication" only to have the order refused
hours later. Unknown permissions (a device signed in before the server sent them) allow everything: the
server still decides every write.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

Permissions = dict[str, frozenset[str]]

ACTIONS: Final = ("read", "search", "create", "update", "delete")

#: Chart controls -> (resource type, action) they need. The keys are what the chart screen asks about.
CHART_ACTIONS: Final[Mapping[str, tuple[str, str]]] = {
    "recordVitals": ("Observation", "create"),
    "addAllergy": ("AllergyIntolerance", "create"),
    "updateAllergy": ("AllergyIntolerance", "update"),
    "startMedication": ("MedicationRequest", "create"),
    "changeMedication": ("MedicationRequest", "update"),
    "stopMedication": ("MedicationRequest", "update"),
    "writeNote": ("DocumentReference", "create"),
    "editDetails": ("Patient", "update"),
    "addProblem": ("Condition", "create"),  # issue 18 item 5
    "resolveProblem": ("Condition", "update"),
}

#: Plain words for a resource type, for "Your role may not <verb> <thing>".
THINGS: Final[Mapping[str, str]] = {
    "MedicationRequest": "medication orders",
    "AllergyIntolerance": "allergies",
    "Observation": "vital signs and results",
    "DocumentReference": "notes",
    "Patient": "patient details",
    "Condition": "problems",
    "Encounter": "visits",
    "Immunization": "immunizations",
    "Procedure": "procedures",
    "CareTeam": "care teams",
}
VERBS: Final[Mapping[str, str]] = {"create": "enter", "update": "change", "delete": "remove",
                                   "read": "read", "search": "search"}


def parse_permissions(raw: Any) -> Permissions | None:
    """The server's ``permissions`` object, checked; None when absent or malformed (= unknown)."""
    if not isinstance(raw, Mapping):
        return None
    out: Permissions = {}
    for rtype, actions in raw.items():
        if not isinstance(rtype, str) or not isinstance(actions, (list, tuple)):
            return None
        out[rtype] = frozenset(a for a in actions if isinstance(a, str) and a in ACTIONS)
    return out


def may(perms: Permissions | None, resource_type: str, action: str) -> bool:
    """True if the role allows ``action`` on ``resource_type`` (unknown permissions: allowed)."""
    if perms is None:
        return True
    return action in perms.get(resource_type, frozenset())


def chart_actions(perms: Permissions | None) -> dict[str, bool]:
    """Which chart controls to show (see :data:`CHART_ACTIONS`)."""
    return {name: may(perms, rtype, action) for name, (rtype, action) in CHART_ACTIONS.items()}


def not_allowed_message(resource_type: str, action: str) -> str:
    """The sentence shown when a control is used that the role does not allow."""
    thing = THINGS.get(resource_type, "this kind of record")
    return (f"Your role may not {VERBS.get(action, action)} {thing}. "
            "Ask a colleague whose role allows it (for a medication order: a physician).")
