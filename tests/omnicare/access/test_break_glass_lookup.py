"""Break-the-glass lookup (issue 18 item 7): a count and an opaque id, never demographics; audited; rate-limited;
only for roles that may break the glass; and the chart it opens stops being served when the grant ends."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from omnicare.access import services
from omnicare.access.roles import role_assign
from omnicare.access.services import token_create
from omnicare.audit.models import AuditEvent
from omnicare.keys import backends
from pyclient.views import break_glass as bg

pytestmark = pytest.mark.django_db

ROSA = {"resourceType": "Patient", "id": "p-rosa", "name": [{"family": "Quintero", "given": ["Rosa"]}],
        "birthDate": "1961-03-09", "gender": "female", "address": [{"city": "Springfield", "line": ["12 Elm St"]}],
        "identifier": [{"system": "urn:oid:omnicare:mrn", "value": "MRN-009901"}]}
TWINS = [{"resourceType": "Patient", "id": f"p-twin-{i}", "name": [{"family": "Okafor", "given": [g]}],
          "birthDate": "1990-07-01"} for i, g in enumerate(("Ada", "Obi"))]
MINE = {"resourceType": "Patient", "id": "p-mine", "name": [{"family": "Lindqvist", "given": ["Eva"]}],
        "birthDate": "1975-05-05"}


@pytest.fixture(autouse=True)
def setup(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import omnicare.access.services as access

    monkeypatch.setattr(access, "care_team_patient_ids", lambda *, user: frozenset({"p-mine"}))
    monkeypatch.setenv("OMNICARE_MASTER_KEY", base64.b64encode(b"\x03" * 32).decode())
    backends.reset_backends()
    from omnicare.fhir.services import resources_import

    resources_import(resources=[ROSA, *TWINS, MINE])
    yield
    backends.reset_backends()


def _client(django_user_model: Any, username: str, role: str) -> tuple[Any, Client]:
    user = django_user_model.objects.create_user(username=username)
    role_assign(user=user, role=role)
    return user, Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=user, name='t')}")


def _lookup(client: Client, **body: str) -> Any:
    return client.post("/api/access/break-glass/lookup", json.dumps(body), content_type="application/json")


def test_one_match_outside_the_team_gives_an_id_and_nothing_about_the_patient(django_user_model: Any) -> None:
    user, client = _client(django_user_model, "dr.er", "physician")
    r = _lookup(client, family="quintero", birthDate="1961-03-09")
    assert r.status_code == 200, r.content
    assert r.json() == {"matches": 1, "inCareTeam": 0, "patientId": "p-rosa"}
    text = r.content.decode()
    for phi in ("Rosa", "Springfield", "Elm", "female", "MRN-009901", "1961"):
        assert phi not in text  # nothing the clinician did not type (and not even the typed date back)
    by_mrn = _lookup(client, mrn="MRN-009901").json()
    assert by_mrn == {"matches": 1, "inCareTeam": 0, "patientId": "p-rosa"}
    # Every lookup is a security event naming the matched patient, never what was typed.
    events = list(AuditEvent.objects.filter(action="break-glass-lookup").order_by("id"))
    assert [(e.category, e.outcome, e.patient_ids, e.purpose) for e in events] == \
        [("security", "success", ["p-rosa"], "ETREAT")] * 2
    assert all("Quintero" not in json.dumps(e.detail) and "MRN-009901" not in json.dumps(e.detail) for e in events)
    # The id is what the existing break-glass request takes; then the chart is readable, until the grant ends.
    grant = client.post("/api/access/break-glass", json.dumps({"patientId": "p-rosa", "reason": "Collapsed in "
                        "the waiting room, unresponsive"}), content_type="application/json")
    assert grant.status_code == 201, grant.content
    assert client.get("/fhir/R4/Patient/p-rosa").status_code == 200
    client.post(f"/api/access/break-glass/{grant.json()['id']}/end")
    assert client.get("/fhir/R4/Patient/p-rosa").status_code in (403, 404)  # the server stops serving it
    assert services.patient_ids_granted(user=user) == set()


def test_several_matches_or_a_team_patient_give_no_id(django_user_model: Any) -> None:
    _user, client = _client(django_user_model, "dr.er", "physician")
    assert _lookup(client, family="Okafor", birthDate="1990-07-01").json() == {"matches": 2, "inCareTeam": 0}
    assert _lookup(client, family="Lindqvist", birthDate="1975-05-05").json() == {"matches": 0, "inCareTeam": 1}
    assert _lookup(client, family="Nobody", birthDate="1975-05-05").json() == {"matches": 0, "inCareTeam": 0}
    # A partial name or date is not a lookup (the same rule the device checks first).
    assert _lookup(client, family="Quin", birthDate="1961-03-09").json()["matches"] == 0
    r = _lookup(client, family="Quintero", birthDate="1961")
    assert r.status_code == 400 and "full birth date" in r.content.decode()


def test_refused_for_roles_without_break_glass_and_audited(django_user_model: Any) -> None:
    _user, client = _client(django_user_model, "desk.er", "front_desk")
    r = _lookup(client, family="Quintero", birthDate="1961-03-09")
    assert r.status_code == 403
    assert "p-rosa" not in r.content.decode()
    ev = AuditEvent.objects.get(action="break-glass-lookup")
    assert (ev.outcome, ev.patient_ids) == ("denied", [])
    assert Client().post("/api/access/break-glass/lookup", "{}", content_type="application/json").status_code == 401


def test_rate_limited_per_user(django_user_model: Any) -> None:
    _user, client = _client(django_user_model, "dr.er", "physician")
    for _ in range(bg.LOOKUP_LIMIT):
        assert _lookup(client, mrn="MRN-000000").status_code == 200
    r = _lookup(client, family="Quintero", birthDate="1961-03-09")
    assert r.status_code == 429 and int(r["Retry-After"]) > 0
    assert "p-rosa" not in r.content.decode()
    assert AuditEvent.objects.filter(action="break-glass-lookup", outcome="denied").count() == 1
    _other, second = _client(django_user_model, "dr.two", "physician")  # the limit is per user
    assert _lookup(second, family="Quintero", birthDate="1961-03-09").json()["patientId"] == "p-rosa"


def test_the_permissions_carry_break_glass_only_for_roles_that_have_it() -> None:
    from omnicare.access.roles import permissions_for

    assert permissions_for({"physician"})["EmergencyAccess"] == ["create"]
    assert "EmergencyAccess" not in permissions_for({"front_desk"})
