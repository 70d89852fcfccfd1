"""Roles and the permission matrix — the one place that says who may do what.

A privacy officer reads this file (or ``docs/PERMISSIONS.md``, generated from it by
``manage.py permissions_doc``). Letters: R read, S search, C create, U update, D delete.
Anything not listed is denied: an unknown role, resource type or action gets nothing.

Scope says *which patients*, on top of the matrix:
  care-team  only patients whose CareTeam lists the user (``access.services.visible_patient_ids``), plus
             active break-the-glass grants
  all        every patient (front desk registration; auditors reviewing the trail)
  none       no patient data at all (administrators manage users and devices, not charts)

A user's roles are the Django groups of the same names (assign with ``role_assign``
or in the admin). With several roles, a request is allowed if any one role allows it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pyclient.views.break_glass import PERMISSION

from .directory import directory

ACTIONS: tuple[str, ...] = ("read", "search", "create", "update", "delete")
LETTER = {"R": "read", "S": "search", "C": "create", "U": "update", "D": "delete"}
# FHIR interactions that are the same thing for access purposes.
ACTION_ALIASES = {"vread": "read", "history": "search"}

PHYSICIAN, NURSE, PHARMACIST, FRONT_DESK, ADMINISTRATOR, AUDITOR = (
    "physician", "nurse", "pharmacist", "front_desk", "administrator", "auditor",
)
INTEGRATION = "integration"


@dataclass(frozen=True)
class Role:
    name: str
    label: str
    scope: str  # care-team | all | none
    break_glass: bool  # may request emergency access outside the care team
    grants: dict[str, str]  # resource type -> letters
    duty: str
    # Letters for every other R4 resource type the store holds (types not named in any grant); "" = none.
    other_types: str = ""
    # Bearer tokens only: the account can never sign in to the UI (interface engines, migrations, bulk).
    token_only: bool = False


# The rest of a US Core record (issue 15). Reference data (Organization, Location, PractitionerRole,
# Medication) is outside every patient compartment: readable by every clinical role, maintained by
# administrators and integrations.
_RECORD_PHYSICIAN: dict[str, str] = {
    "Organization": "RS", "Location": "RS", "PractitionerRole": "RS", "Medication": "RS",
    "Immunization": "RSCUD", "Procedure": "RSCUD", "DiagnosticReport": "RSCUD", "ServiceRequest": "RSCUD",
    "MedicationStatement": "RSCUD", "MedicationAdministration": "RSCU", "MedicationDispense": "RS",
    "Appointment": "RSCUD", "Device": "RSCU", "Goal": "RSCUD", "CarePlan": "RSCUD", "Coverage": "RS",
    "Provenance": "RSC", "DetectedIssue": "RSCU", "Flag": "RSCUD", "Specimen": "RSCU",
    "QuestionnaireResponse": "RSCU", "RelatedPerson": "RSCU", "EpisodeOfCare": "RSCU",
    "Subscription": "RSCUD",  # notifications of their own patients' changes to another system (scope-filtered)
}
_RECORD_NURSE: dict[str, str] = {
    "Organization": "RS", "Location": "RS", "PractitionerRole": "RS", "Medication": "RS",
    "Immunization": "RSCU", "Procedure": "RSC", "DiagnosticReport": "RS", "ServiceRequest": "RS",
    "MedicationStatement": "RSCU", "MedicationAdministration": "RSCU", "MedicationDispense": "RS",
    "Appointment": "RSCU", "Device": "RS", "Goal": "RSCU", "CarePlan": "RS", "Coverage": "RS",
    "Provenance": "RSC", "DetectedIssue": "RS", "Flag": "RSCU", "Specimen": "RSC",
    "QuestionnaireResponse": "RSCU", "RelatedPerson": "RSCU", "EpisodeOfCare": "RS",
}
_RECORD_PHARMACIST: dict[str, str] = {
    "Organization": "RS", "Location": "RS", "PractitionerRole": "RS", "Medication": "RSCU",
    "Immunization": "RS", "Procedure": "RS", "DiagnosticReport": "RS", "ServiceRequest": "RS",
    "MedicationStatement": "RSCU", "MedicationAdministration": "RS", "MedicationDispense": "RSCU",
    "Coverage": "RS", "Provenance": "RSC", "DetectedIssue": "RSCU", "Flag": "RS",
}
_RECORD_FRONT_DESK: dict[str, str] = {
    "Organization": "RS", "Location": "RS", "PractitionerRole": "RS", "Appointment": "RSCU", "Coverage": "RSCU",
    "RelatedPerson": "RSCU",
}
_DIRECTORY_ADMIN: dict[str, str] = {"Organization": "RSCUD", "Location": "RSCUD", "PractitionerRole": "RSCUD"}

ROLES: dict[str, Role] = {
    r.name: r
    for r in (
        Role(PHYSICIAN, "Physician", "care-team", True, duty="Treats the patients of their care teams.", grants={
            "Patient": "RSCU", "Practitioner": "RS", "CareTeam": "RSCU", "Encounter": "RSCUD",
            "Observation": "RSCUD", "Condition": "RSCUD", "AllergyIntolerance": "RSCUD",
            "MedicationRequest": "RSCUD", "DocumentReference": "RSCUD", "Communication": "RSCUD",
            **_RECORD_PHYSICIAN,
        }),
        Role(NURSE, "Nurse", "care-team", True, duty="Records vitals, allergies and notes; reads the chart.", grants={
            "Patient": "RSCU", "Practitioner": "RS", "CareTeam": "RS", "Encounter": "RSCU",
            "Observation": "RSCU", "Condition": "RS", "AllergyIntolerance": "RSCU",
            "MedicationRequest": "RS", "DocumentReference": "RSC", "Communication": "RSC",
            **_RECORD_NURSE,
        }),
        Role(PHARMACIST, "Pharmacist", "care-team", True, duty="Verifies prescriptions against allergies and labs.",
             grants={
            "Patient": "RS", "Practitioner": "RS", "CareTeam": "RS", "Encounter": "RS", "Observation": "RS",
            "Condition": "RS", "AllergyIntolerance": "RSCU", "MedicationRequest": "RSU", "Communication": "RSC",
            **_RECORD_PHARMACIST,
        }),
        Role(FRONT_DESK, "Front desk", "all", False, duty="Registers patients and checks them in; no clinical data.",
             grants={
            "Patient": "RSCU", "Practitioner": "RS", "CareTeam": "RS", "Encounter": "RSC",
            **_RECORD_FRONT_DESK,
        }),
        Role(ADMINISTRATOR, "Administrator", "none", False,
             duty="Manages users, practitioners and devices; reads no patient data.", grants={
            "Practitioner": "RSCUD", **_DIRECTORY_ADMIN,
        }),
        Role(AUDITOR, "Auditor", "all", False, duty="Reads the audit trail and security events.", grants={
            "AuditEvent": "RS",
        }),
        Role(INTEGRATION, "Integration", "all", False, token_only=True, other_types="RSCU",
             duty="Interface engines, migrations and bulk clients: bearer token only, every patient, every "
                  "clinical type; audited as the integration.", grants={
            "Patient": "RSCU", "Practitioner": "RSCU", "CareTeam": "RSCU", "Encounter": "RSCU",
            "Observation": "RSCU", "Condition": "RSCU", "AllergyIntolerance": "RSCU",
            "MedicationRequest": "RSCU", "DocumentReference": "RSCU", "Communication": "RSCU",
            **{t: "RSCU" for t in _RECORD_PHYSICIAN},
        }),
    )
}

ROLE_NAMES: frozenset[str] = frozenset(ROLES)
# Every resource type the matrix speaks about (anything else is denied to everyone).
RESOURCE_TYPES: tuple[str, ...] = tuple(dict.fromkeys(rt for r in ROLES.values() for rt in r.grants))
CLINICAL_TYPES: tuple[str, ...] = tuple(rt for rt in RESOURCE_TYPES if rt != "AuditEvent")


def _other_type(resource_type: str) -> bool:
    """A stored R4 type that no grant names (``Role.other_types`` applies to it)."""
    return (resource_type not in RESOURCE_TYPES and resource_type != "AuditEvent"
            and directory().is_resource_type(resource_type))


def allowed_actions(role: str, resource_type: str) -> frozenset[str]:
    """The actions ``role`` may do on ``resource_type`` (empty if none)."""
    r = ROLES.get(role)
    if r is None:
        return frozenset()
    if resource_type == "*":  # system-wide history: only for roles that may see every clinical type
        common = [set(allowed_actions(role, rt)) for rt in CLINICAL_TYPES]
        return frozenset(set.intersection(*common)) if common else frozenset()
    letters = r.grants.get(resource_type)
    if letters is None and r.other_types and _other_type(resource_type):
        letters = r.other_types
    return frozenset(LETTER[c] for c in letters or "")


def permissions_for(roles: frozenset[str] | set[str]) -> dict[str, list[str]]:
    """What a user holding ``roles`` may do on each resource type, for the device to decide which controls to
    offer (``pyclient.views.permissions``). Same rule as ``allowed_actions``: any one role allowing is enough."""
    out: dict[str, list[str]] = {}
    for rtype in RESOURCE_TYPES:
        acts: set[str] = set()
        for role in roles:
            acts |= allowed_actions(role, rtype)
        if acts:
            out[rtype] = [a for a in ACTIONS if a in acts]
    if any(ROLES[r].break_glass for r in roles if r in ROLES):
        # Issue 18 item 7: the device shows the emergency-access control only to roles that may break the glass
        # (the key is pyclient's, so the two sides name it once).
        out[PERMISSION[0]] = [PERMISSION[1]]
    return out


def token_only(user: Any) -> bool:
    """True if one of ``user``'s roles is bearer-token only (may not sign in to the UI)."""
    return any(ROLES[r].token_only for r in user_roles(user))


def normalize_action(action: str) -> str:
    return ACTION_ALIASES.get(action, action)


ROLE_CACHE_SECONDS = 30.0


def user_roles(user: Any) -> frozenset[str]:
    """The role names held by ``user`` (their Django groups that are roles).

    Cached on the user instance for 30 s: a request asks many times, and a long-lived
    WebSocket connection still notices a removed role within that time.
    """
    if user is None or not getattr(user, "is_authenticated", False):
        return frozenset()
    cached = getattr(user, "_omnicare_roles", None)
    now = time.monotonic()
    if cached is not None and now - cached[0] < ROLE_CACHE_SECONDS:
        return cached[1]  # type: ignore[no-any-return]
    roles = frozenset(user.groups.filter(name__in=ROLE_NAMES).values_list("name", flat=True))
    user._omnicare_roles = (now, roles)
    return roles


def roles_preload(user: Any, roles: frozenset[str]) -> None:
    """Seed :func:`user_roles`' cache with roles loaded together with the user (token authentication)."""
    user._omnicare_roles = (time.monotonic(), frozenset(roles) & frozenset(ROLE_NAMES))


# What each role may do in the Django admin (/admin/). Clinical data is never here: charts are
# read through the API, where access_check and the audit trail apply.
ADMIN_SITE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    ADMINISTRATOR: (
        "auth.view_user", "auth.add_user", "auth.change_user", "auth.view_group",
        "access.view_apitoken", "access.change_apitoken", "access.view_devicerevocation",
        "access.add_devicerevocation", "access.view_mfaenrollment", "access.delete_mfaenrollment",
        "access.view_loginfailure", "access.delete_loginfailure", "sync.view_device",
        "keys.view_keyversion",
        "cds.view_ordercheck", "cds.view_knowledgebundle", "cds.view_cdsclient", "cds.add_cdsclient",
        "cds.change_cdsclient",
    ),
    AUDITOR: (
        "audit.view_auditevent", "audit.view_checkpoint", "audit.view_auditarchive",
        "access.view_emergencyaccessgrant", "access.view_devicerevocation", "access.view_loginfailure",
    ),
}


# HL7 v2 interface (issue 12): administrators operate the queues (never the raw bodies: that is the separate
# ``hl7.view_raw_message`` permission, granted to a named account and audited on every display).
ADMIN_SITE_PERMISSIONS[ADMINISTRATOR] += (
    "hl7.view_inboundmessage", "hl7.change_inboundmessage", "hl7.view_outboundmessage",
    "hl7.change_outboundmessage",
)


# Break-the-glass (issue 18): the privacy officer (auditor) may revoke a running emergency grant — the admin's
# "revoke" action, audited as a stop by the officer; every field of a grant stays read-only.
ADMIN_SITE_PERMISSIONS[AUDITOR] += ("access.change_emergencyaccessgrant",)


# Recovery files (issue 13 item 5): administrators import a tablet's unsynced changes (replayed as their author,
# audited as a recovery); the list shows counts only.
ADMIN_SITE_PERMISSIONS[ADMINISTRATOR] += ("sync.view_recoveryimport", "sync.add_recoveryimport")


def _grant_admin_site(group: Any, role: str) -> None:
    from django.contrib.auth.models import Permission

    for perm in ADMIN_SITE_PERMISSIONS.get(role, ()):
        app_label, codename = perm.split(".")
        found = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
        if found is not None:  # an app that is not installed simply contributes nothing
            group.permissions.add(found)


def role_assign(*, user: Any, role: str) -> None:
    """Give ``user`` the ``role`` (creates the group if needed).

    Administrators and auditors also get into /admin/ (``is_staff``) with only the model
    permissions in ``ADMIN_SITE_PERMISSIONS``.
    """
    from django.contrib.auth.models import Group

    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {sorted(ROLES)}")
    group, _ = Group.objects.get_or_create(name=role)
    _grant_admin_site(group, role)
    user.groups.add(group)
    if role in ADMIN_SITE_PERMISSIONS and not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    user.__dict__.pop("_omnicare_roles", None)


def role_remove(*, user: Any, role: str) -> None:
    from django.contrib.auth.models import Group

    group = Group.objects.filter(name=role).first()
    if group is not None:
        user.groups.remove(group)
    user.__dict__.pop("_omnicare_roles", None)


def permissions_markdown() -> str:
    """The matrix as a Markdown table (docs/PERMISSIONS.md is this text)."""
    roles = list(ROLES.values())
    lines = [
        "# Permissions",
        "",
        "Generated from `omnicare/access/roles.py` by `python manage.py permissions_doc`; do not edit by hand.",
        "",
        "Letters: **R** read, **S** search, **C** create, **U** update, **D** delete. A blank cell is denied. "
        "Resource types not listed are denied to every role. The server enforces this in "
        "`omnicare.access.services.access_check` on every FHIR REST, sync and WebSocket request.",
        "",
        "| Resource type | " + " | ".join(r.label for r in roles) + " |",
        "|---|" + "---|" * len(roles),
    ]
    for rt in RESOURCE_TYPES:
        cells = ["".join(c for c in "RSCUD" if c in r.grants.get(rt, "")) for r in roles]
        lines.append(f"| {rt} | " + " | ".join(cells) + " |")
    cells = ["".join(c for c in "RSCUD" if c in r.other_types) for r in roles]
    lines.append("| *any other R4 resource type* | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Which patients",
        "",
        "| Role | Patients | Break-the-glass | Duty |",
        "|---|---|---|---|",
    ]
    scope_text = {
        "care-team": "their care teams' patients (+ active emergency grants)",
        "all": "all patients",
        "none": "none (no patient data)",
    }
    for r in roles:
        lines.append(f"| {r.label} | {scope_text[r.scope]} | {'yes' if r.break_glass else 'no'} | {r.duty} |")
    lines += [
        "",
        "Break-the-glass: a role marked *yes* may request emergency access to one patient outside its care teams, "
        "with a reason. The grant lasts 4 hours, is recorded as a security alert in the audit trail "
        "(emergency override started / stopped), and is refused if that audit record cannot be written.",
        "",
        "Token-only roles (Integration) never sign in to the UI: `manage.py create_api_token` issues their bearer "
        "token, and every request is audited under the integration's own account.",
        "",
        "Users without any role can do nothing with patient data. Administrators manage accounts and devices in "
        "`/admin/`; auditors read the trail at `/api/audit/events`.",
        "",
    ]
    return "\n".join(lines)
