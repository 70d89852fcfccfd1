"""Every failure is a clear 4xx OperationOutcome and writes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client, override_settings

from omnicare.core.errors import Forbidden

from .conftest import BASE, Fhir, outcome_of, patient, row_counts

pytestmark = pytest.mark.django_db


@pytest.fixture
def existing(fhir: Fhir) -> str:
    return fhir.create(patient())["id"]


BAD_WRITES = [
    ("malformed json", "post", "/Patient", b'{"resourceType": "Patient", ', {}, 400),
    ("not an object", "post", "/Patient", b"[1, 2]", {}, 400),
    ("no resourceType", "post", "/Patient", json.dumps({"name": [{"family": "X"}]}), {}, 400),
    ("wrong resourceType for url", "post", "/Patient", json.dumps({"resourceType": "Observation"}), {}, 400),
    ("unsupported type in body", "post", "/Patient", json.dumps({"resourceType": "Basic"}), {}, 400),
    (
        "wrong element type",
        "post",
        "/Patient",
        json.dumps({"resourceType": "Patient", "name": [{"family": 3}]}),
        {},
        422,
    ),
    (
        "bad date",
        "post",
        "/Patient",
        json.dumps({"resourceType": "Patient", "birthDate": "last tuesday"}),
        {},
        422,
    ),
    ("bad code", "post", "/Patient", json.dumps({"resourceType": "Patient", "gender": 7}), {}, 422),
    (
        "missing required",
        "post",
        "/Observation",
        json.dumps({"resourceType": "Observation", "status": "final"}),
        {},
        422,
    ),
    ("wrong content type", "post", "/Patient", json.dumps(patient()), {"content_type": "text/plain"}, 415),
    ("xml content type", "post", "/Patient", "<Patient/>", {"content_type": "application/fhir+xml"}, 415),
    ("invalid id in url", "put", "/Patient/bad$id", json.dumps(patient(id="bad$id")), {}, 400),
    ("id too long", "put", "/Patient/" + "a" * 65, json.dumps(patient(id="a" * 65)), {}, 400),
    ("put without id", "put", "/Patient/p1", json.dumps(patient()), {}, 400),
    ("put id mismatch", "put", "/Patient/p1", json.dumps(patient(id="p2")), {}, 400),
    (
        "put type mismatch",
        "put",
        "/Patient/p1",
        json.dumps({"resourceType": "Practitioner", "id": "p1"}),
        {},
        400,
    ),
    ("unknown type", "post", "/Spaceship", json.dumps({"resourceType": "Spaceship"}), {}, 404),
    ("bad If-Match", "put", "/Patient/p1", json.dumps(patient(id="p1")), {"HTTP_IF_MATCH": "yesterday"}, 400),
]


@pytest.mark.parametrize(
    ("why", "method", "path", "data", "extra", "status"), BAD_WRITES, ids=[b[0] for b in BAD_WRITES]
)
def test_bad_writes_are_4xx_outcomes_and_write_nothing(
    fhir: Fhir, existing: str, why: str, method: str, path: str, data: Any, extra: dict[str, Any], status: int
) -> None:
    before = row_counts()
    kwargs = {"content_type": "application/fhir+json", **extra}
    r = getattr(fhir.client, method)(BASE + path, data, **kwargs)
    assert r.status_code == status, (why, r.content)
    issue = outcome_of(r)["issue"][0]
    assert issue["severity"] == "error" and issue["diagnostics"]
    assert row_counts() == before


def test_validation_error_names_the_element_but_not_the_value(fhir: Fhir) -> None:
    r = fhir.post("/Patient", {"resourceType": "Patient", "birthDate": "secret-value-1234"})
    assert r.status_code == 422
    issue = outcome_of(r)["issue"][0]
    assert "Patient.birthDate" in issue["expression"]
    assert b"secret-value-1234" not in r.content


@override_settings(OMNICARE_MAX_BODY_BYTES=200)
def test_oversized_body_is_413_and_writes_nothing(fhir: Fhir) -> None:
    before = row_counts()
    r = fhir.post("/Patient", patient(text={"status": "generated", "div": "<div>" + "x" * 500 + "</div>"}))
    assert r.status_code == 413
    assert outcome_of(r)["issue"][0]["code"] == "too-costly"
    assert row_counts() == before


def test_unauthenticated_requests_get_401_outcome(anon: Client, db: Any) -> None:
    for method, path in [
        ("get", "/Patient"),
        ("get", "/Patient/x"),
        ("post", "/Patient"),
        ("get", "/_history"),
    ]:
        r = getattr(anon, method)(BASE + path)
        assert r.status_code == 401, path
        assert outcome_of(r)["issue"][0]["code"] == "login"
        assert r["WWW-Authenticate"] == "Bearer"


def test_bad_token_is_401(db: Any) -> None:
    r = Client(HTTP_AUTHORIZATION="Bearer oc_nope").get(BASE + "/Patient")
    assert r.status_code == 401


def test_metadata_needs_no_authentication(anon: Client, db: Any) -> None:
    r = anon.get(BASE + "/metadata")
    assert r.status_code == 200 and r.json()["resourceType"] == "CapabilityStatement"


def test_session_requests_need_csrf_for_writes(user: Any, db: Any) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    assert browser.get(BASE + "/Patient").status_code == 200
    before = row_counts()
    r = browser.post(BASE + "/Patient", json.dumps(patient()), content_type="application/fhir+json")
    assert r.status_code in (401, 403)
    assert row_counts() == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("patch", "/Patient/x"),
        ("post", "/Patient/x"),
        ("put", "/Patient"),
        ("delete", "/Patient"),
        ("get", "/"),
        ("delete", "/metadata"),
    ],
)
def test_unsupported_method_is_405_outcome(fhir: Fhir, method: str, path: str) -> None:
    r = getattr(fhir.client, method)(BASE + path)
    assert r.status_code == 405
    assert outcome_of(r)["issue"][0]["code"] == "not-supported"


def test_unknown_type_on_read_and_search_is_404(fhir: Fhir) -> None:
    assert outcome_of(fhir.get("/Spaceship"))["issue"][0]["code"] == "not-supported"
    assert fhir.get("/Spaceship").status_code == 404
    assert fhir.get("/Spaceship/1").status_code == 404


def test_forbidden_by_access_check_is_403_and_writes_nothing(
    fhir: Fhir, existing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every interaction goes through access_check: a denial there is a 403 everywhere."""
    seen: list[tuple[str, str, tuple[str, ...]]] = []

    def deny(*, user: Any, action: str, resource_type: str, patient_ids: Any = ()) -> None:
        seen.append((action, resource_type, tuple(patient_ids)))
        raise Forbidden("not on your care team")

    monkeypatch.setattr("omnicare.fhir.services.access_check", deny)
    before = row_counts()
    calls = [
        ("read", lambda: fhir.get(f"/Patient/{existing}")),
        ("vread", lambda: fhir.get(f"/Patient/{existing}/_history/1")),
        ("history", lambda: fhir.get(f"/Patient/{existing}/_history")),
        ("history", lambda: fhir.get("/Patient/_history")),
        ("search", lambda: fhir.get(f"/Observation?patient={existing}")),
        ("create", lambda: fhir.post("/Patient", patient())),
        ("update", lambda: fhir.put(f"/Patient/{existing}", patient(id=existing))),
        ("delete", lambda: fhir.delete(f"/Patient/{existing}")),
    ]
    for action, call in calls:
        r = call()
        assert r.status_code == 403, (action, r.content)
        assert outcome_of(r)["issue"][0]["code"] == "forbidden"
        assert seen[-1][0] == action
    assert seen[0] == ("read", "Patient", (existing,))
    assert seen[4] == ("search", "Observation", (existing,))
    assert row_counts() == before


def test_unknown_search_param_ignored_by_default_400_when_strict(fhir: Fhir, existing: str) -> None:
    lenient = fhir.get("/Patient?shoe-size=42")
    assert lenient.status_code == 200 and lenient.json()["total"] == 1
    assert "shoe-size" not in lenient.json()["link"][0]["url"]
    strict = fhir.get("/Patient?shoe-size=42", HTTP_PREFER="handling=strict")
    assert strict.status_code == 400
    assert "shoe-size" in outcome_of(strict)["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "query",
    [
        "birthdate=notadate",
        "_lastUpdated=gt2020-13-45",
        "_count=many",
        "_count=-1",
        "name:soundex=x",
        "_cursor=abc",
    ],
)
def test_bad_search_values_are_400(fhir: Fhir, query: str) -> None:
    r = fhir.get(f"/Patient?{query}")
    assert r.status_code == 400, r.content
    outcome_of(r)


def test_invalid_version_in_vread_is_4xx(fhir: Fhir, existing: str) -> None:
    assert fhir.get(f"/Patient/{existing}/_history/abc").status_code == 400
    assert fhir.get(f"/Patient/{existing}/_history/99").status_code == 404
