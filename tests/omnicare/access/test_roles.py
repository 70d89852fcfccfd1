"""The role × resource type × action matrix, enforced by access_check: every combination, exhaustively."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from omnicare.access import roles
from omnicare.access.roles import role_assign
from omnicare.access.services import access_check
from omnicare.core.errors import Forbidden, NotAuthenticated
from omnicare.fhir.search import SUPPORTED_TYPES

pytestmark = pytest.mark.django_db

IN_SCOPE, OUT_OF_SCOPE = "p-mine", "p-other"
ALL_ACTIONS = ("read", "vread", "search", "history", "create", "update", "delete")
# Types no role may touch, and the system-wide history pseudo-type.
EXTRA_TYPES = ("Medication", "Basic", "Bundle", "Device", "*")
PATIENT_CASES = ((), (IN_SCOPE,), (OUT_OF_SCOPE,), (IN_SCOPE, OUT_OF_SCOPE))


@pytest.fixture(autouse=True)
def care_team(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every clinical user's care team is {p-mine} (the CareTeam rule itself is tested in tests/omnicare/sync)."""
    import omnicare.access.services as access

    monkeypatch.setattr(access, "care_team_patient_ids", lambda *, user: frozenset({IN_SCOPE}))


@pytest.fixture(autouse=True)
def registered(db: Any) -> None:
    """Both patients exist (writes for a not-yet-registered patient have their own rule and test)."""
    from omnicare.fhir.services import resources_import

    resources_import(resources=[{"resourceType": "Patient", "id": p} for p in (IN_SCOPE, OUT_OF_SCOPE)])


@pytest.fixture(scope="module")
def role_names() -> list[str | None]:
    return [None, *roles.ROLES]


def _user(django_user_model: Any, role: str | None) -> Any:
    user = django_user_model.objects.create_user(username=f"u-{role or 'none'}")
    if role:
        role_assign(user=user, role=role)
    return user


R4_TYPES = set(SUPPORTED_TYPES)


def _expected(role: str | None, resource_type: str, action: str, patients: tuple[str, ...]) -> bool:
    """The policy spelled out independently of access_check's code path."""
    if role is None:
        return False
    r = roles.ROLES[role]
    wanted = {"vread": "read", "history": "search"}.get(action, action)
    if resource_type == "*":
        granted = all(wanted in roles.allowed_actions(role, t) for t in roles.CLINICAL_TYPES)
    else:
        letters = r.grants.get(resource_type)
        if letters is None and resource_type in R4_TYPES and resource_type not in roles.RESOURCE_TYPES:
            letters = r.other_types  # any other R4 type the store holds (the integration role)
        granted = any(roles.LETTER[c] == wanted for c in letters or "")
    if not granted:
        return False
    if not patients or (resource_type == "Patient" and wanted == "create") or r.scope == "all":
        return True
    if r.scope == "none":
        return False
    return set(patients) <= {IN_SCOPE}


def test_every_combination_matches_the_matrix(django_user_model: Any, role_names: list[str | None]) -> None:
    denied_expected = denied_seen = allowed = 0
    wrong: list[tuple[Any, ...]] = []
    for role in role_names:
        user = _user(django_user_model, role)
        for rt, action, patients in itertools.product(
            (*roles.RESOURCE_TYPES, *EXTRA_TYPES), ALL_ACTIONS, PATIENT_CASES
        ):
            expect = _expected(role, rt, action, patients)
            try:
                access_check(user=user, action=action, resource_type=rt, patient_ids=patients)
                got = True
            except Forbidden:
                got = False
            if got != expect:
                wrong.append((role, rt, action, patients, got))
            if not expect:
                denied_expected += 1
                denied_seen += not got
            else:
                allowed += 1
    assert not wrong, wrong[:10]
    assert denied_seen == denied_expected  # 100 % of the combinations not granted are denied
    assert denied_expected > 1000 and allowed > 100


@pytest.mark.parametrize(
    ("role", "resource_type", "action", "patients"),
    [
        ("administrator", "Patient", "read", (IN_SCOPE,)),
        ("administrator", "Observation", "search", ()),
        ("auditor", "Observation", "read", (IN_SCOPE,)),
        ("front_desk", "Observation", "read", (IN_SCOPE,)),
        ("front_desk", "Condition", "search", ()),
        ("pharmacist", "Observation", "create", (IN_SCOPE,)),
        ("nurse", "MedicationRequest", "create", (IN_SCOPE,)),
        ("nurse", "Observation", "delete", (IN_SCOPE,)),
        ("physician", "Observation", "read", (OUT_OF_SCOPE,)),
        ("physician", "AuditEvent", "search", ()),
        ("physician", "Patient", "delete", (IN_SCOPE,)),
    ],
)
def test_what_a_privacy_officer_expects_is_denied(
    django_user_model: Any, role: str, resource_type: str, action: str, patients: tuple[str, ...]
) -> None:
    user = _user(django_user_model, role)
    with pytest.raises(Forbidden):
        access_check(user=user, action=action, resource_type=resource_type, patient_ids=patients)


@pytest.mark.parametrize(
    ("role", "resource_type", "action", "patients"),
    [
        ("physician", "Observation", "create", (IN_SCOPE,)),
        ("nurse", "Observation", "update", (IN_SCOPE,)),
        ("pharmacist", "MedicationRequest", "update", (IN_SCOPE,)),
        ("front_desk", "Patient", "search", ()),
        ("front_desk", "Patient", "read", (OUT_OF_SCOPE,)),
        ("physician", "Patient", "create", ("brand-new",)),
        ("administrator", "Practitioner", "update", ()),
        ("auditor", "AuditEvent", "search", (OUT_OF_SCOPE,)),
    ],
)
def test_what_each_role_needs_is_allowed(
    django_user_model: Any, role: str, resource_type: str, action: str, patients: tuple[str, ...]
) -> None:
    access_check(user=_user(django_user_model, role), action=action, resource_type=resource_type,
                 patient_ids=patients)


def test_several_roles_combine(django_user_model: Any) -> None:
    user = _user(django_user_model, "front_desk")
    with pytest.raises(Forbidden):
        access_check(user=user, action="read", resource_type="Observation", patient_ids=[IN_SCOPE])
    role_assign(user=user, role="nurse")
    access_check(user=user, action="read", resource_type="Observation", patient_ids=[IN_SCOPE])


def test_anonymous_and_disabled_users_are_not_authenticated(django_user_model: Any) -> None:
    from django.contrib.auth.models import AnonymousUser

    user = _user(django_user_model, "physician")
    user.is_active = False
    user.save()
    for who in (None, AnonymousUser(), user):
        with pytest.raises(NotAuthenticated):
            access_check(user=who, action="read", resource_type="Patient", patient_ids=[IN_SCOPE])


def test_visible_patient_ids_follows_the_role_scope(django_user_model: Any) -> None:
    from omnicare.access.services import ALL_PATIENTS, visible_patient_ids

    doc = _user(django_user_model, "physician")
    desk = _user(django_user_model, "front_desk")
    admin = _user(django_user_model, "administrator")
    assert visible_patient_ids(user=doc) == frozenset({IN_SCOPE})
    assert visible_patient_ids(user=desk, action="read", resource_type="Patient") is ALL_PATIENTS
    # Front desk may not read Observations at all: no role grants it, so no patients either.
    assert visible_patient_ids(user=desk, action="read", resource_type="Observation") == frozenset()
    # Devices never replicate "all": front desk tablets carry their care teams only (none here).
    assert visible_patient_ids(user=desk, device=True) == frozenset({IN_SCOPE})
    assert visible_patient_ids(user=admin) == frozenset()
    assert visible_patient_ids(user=None) == frozenset()


def test_permissions_doc_is_generated_from_the_matrix() -> None:
    text = (Path(settings.BASE_DIR) / "docs" / "PERMISSIONS.md").read_text()
    assert text == roles.permissions_markdown(), "run: python manage.py permissions_doc"
    assert "| Observation | RSCUD | RSCU | RS |  |  |  |" in text


def test_writing_for_a_patient_not_registered_yet_is_allowed_but_not_for_someone_elses(
    django_user_model: Any,
) -> None:
    from omnicare.fhir.services import resources_import

    resources_import(resources=[{"resourceType": "Patient", "id": "p-exists", "name": [{"family": "Known"}]}])
    doc = _user(django_user_model, "physician")
    # Offline registration: the patient, their CareTeam and a first observation arrive in one push.
    access_check(user=doc, action="create", resource_type="CareTeam", patient_ids=["p-brand-new"])
    access_check(user=doc, action="create", resource_type="Observation", patient_ids=["p-brand-new"])
    for action in ("create", "update"):
        with pytest.raises(Forbidden):
            access_check(user=doc, action=action, resource_type="Observation", patient_ids=["p-exists"])
    with pytest.raises(Forbidden):
        access_check(user=doc, action="read", resource_type="Observation", patient_ids=["p-brand-new"])


def test_administrators_reach_the_admin_for_users_and_devices_only(django_user_model: Any) -> None:
    admin = _user(django_user_model, "administrator")
    admin = django_user_model.objects.get(pk=admin.pk)  # fresh: permissions are cached per instance
    assert admin.is_staff
    assert admin.has_perm("auth.change_user") and admin.has_perm("access.add_devicerevocation")
    assert not admin.has_perm("fhir.view_resource") and not admin.has_perm("audit.view_auditevent")
    auditor = django_user_model.objects.get(pk=_user(django_user_model, "auditor").pk)
    assert auditor.has_perm("audit.view_auditevent") and not auditor.has_perm("auth.change_user")
