"""Helpers for the FHIR API tests: JSON in, JSON out, row counts for "nothing written" checks."""

from __future__ import annotations

import json
from typing import Any

import pytest

BASE = "/fhir/R4"


class Fhir:
    """Thin wrapper over the Django test client speaking application/fhir+json."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def get(self, path: str, **headers: Any) -> Any:
        return self.client.get(BASE + path, **headers)

    def post(self, path: str, body: Any, content_type: str = "application/fhir+json", **headers: Any) -> Any:
        data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return self.client.post(BASE + path, data, content_type=content_type, **headers)

    def put(self, path: str, body: Any, content_type: str = "application/fhir+json", **headers: Any) -> Any:
        data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return self.client.put(BASE + path, data, content_type=content_type, **headers)

    def delete(self, path: str, **headers: Any) -> Any:
        return self.client.delete(BASE + path, **headers)

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        r = self.post("/" + resource["resourceType"], resource)
        assert r.status_code == 201, r.content
        return r.json()


@pytest.fixture(autouse=True)
def _fast_password_hashing(request: pytest.FixtureRequest, settings: Any) -> None:
    """The shared ``user`` fixture hashes a password; PBKDF2 would dominate these tests' run time.

    Not for tests against the live server: it runs with its own settings and must verify real hashes.
    """
    if "live_asgi" in request.fixturenames:
        return
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _open_access(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Store tests run with a permissive policy (any active signed-in user may do anything).

    The role matrix and care-team scope are access's tests; here they would only hide what the store does.
    Modules that set ``REAL_ACCESS = True`` run against the real ``access_check`` and scope filter, which
    proves the store calls them. The permissive stand-in still refuses anonymous users, like the real one.
    """
    if getattr(request.module, "REAL_ACCESS", False) or "live_asgi" in request.fixturenames:
        return
    from omnicare.core.errors import NotAuthenticated

    def allow(*, user: Any, action: str, resource_type: str, patient_ids: Any = ()) -> None:
        if user is None or not user.is_authenticated or not user.is_active:
            raise NotAuthenticated("Authentication required")

    monkeypatch.setattr("omnicare.fhir.services.access_check", allow)
    monkeypatch.setattr("omnicare.fhir.services._visible_patients", lambda **_: None)


@pytest.fixture
def fhir(api: Any) -> Fhir:
    return Fhir(api)


def row_counts() -> dict[str, int]:
    """Rows in every store table: equal before/after proves a failed request wrote nothing."""
    from omnicare.fhir import models

    return {
        m.__name__: m.objects.count()
        for m in (
            models.Resource,
            models.ResourceVersion,
            models.ResourcePatient,
            models.SearchToken,
            models.SearchString,
            models.SearchDate,
            models.SearchReference,
        )
    }


def outcome_of(response: Any) -> dict[str, Any]:
    assert response["Content-Type"].startswith("application/fhir+json"), response["Content-Type"]
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body


def patient(family: str = "Doe", given: str = "Jane", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": [given]}], **extra}


@pytest.fixture
def ward(user: Any) -> None:
    """dr.test is a physician on pat-a's care team; pat-b is someone else's patient."""
    from omnicare.access.roles import PHYSICIAN, role_assign
    from omnicare.fhir.services import resources_import

    role_assign(user=user, role=PHYSICIAN)
    resources_import(resources=[
        patient(family="Alpha", id="pat-a"), patient(family="Beta", id="pat-b"),
        {"resourceType": "Practitioner", "id": "dr", "identifier": [{"system": "urn:omnicare:user", "value": "dr.test"}]},
        {"resourceType": "CareTeam", "id": "team-a", "status": "active", "subject": {"reference": "Patient/pat-a"},
         "participant": [{"member": {"reference": "Practitioner/dr"}}]},
    ])  # fmt: skip
