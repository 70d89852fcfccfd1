"""CDS Hooks 2.0 service: discovery, order-sign/order-select with prefetch, token and JWT callers, bad input."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.omnicare.sync.conftest import care_team, patient, practitioner, seed

SIGN = "omnicare-medication-safety-sign"
SELECT = "omnicare-medication-safety-select"
RX = "http://www.nlm.nih.gov/research/umls/rxnorm"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def amoxicillin(mid: str = "draft-1", status: str = "draft") -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": mid, "status": status, "intent": "proposal",
            "subject": {"reference": "Patient/p1"},
            "medicationCodeableConcept": {"coding": [{"system": RX, "code": "308192",
                                                      "display": "Amoxicillin 500 MG Oral Tablet"}]}}


def penicillin_allergy(aid: str = "al-1") -> dict[str, Any]:
    return {"resourceType": "AllergyIntolerance", "id": aid, "patient": {"reference": "Patient/p1"},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed"}]},
            "type": "allergy", "category": ["medication"], "criticality": "high",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "764146007", "display": "Penicillin"}]}}


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r} for r in resources]}


def order_sign(*, prefetch: dict[str, Any] | None, drafts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A request of the shape the CDS Hooks 2.0 order-sign hook defines."""
    body: dict[str, Any] = {
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": "https://ehr.example.org/fhir",
        "hook": "order-sign",
        "context": {
            "userId": "PractitionerRole/123",
            "patientId": "p1",
            "encounterId": "enc-9",
            "draftOrders": {"resourceType": "Bundle", "type": "collection",
                            "entry": [{"resource": d} for d in (drafts or [amoxicillin()])]},
        },
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def full_prefetch() -> dict[str, Any]:
    return {
        "patient": {"resourceType": "Patient", "id": "p1", "birthDate": "1950-02-03"},
        "medications": searchset({"resourceType": "MedicationRequest", "id": "m-1", "status": "active",
                                  "intent": "order", "subject": {"reference": "Patient/p1"},
                                  "medicationCodeableConcept": {"text": "Warfarin 5 mg"}}),
        "allergies": searchset(penicillin_allergy()),
        "labs": searchset(),
    }


def post(client: Any, service: str, body: Any, **headers: Any) -> Any:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(f"/cds-services/{service}", data, content_type="application/json", **headers)


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.fixture
def doctor(db: Any, user: Any) -> Any:
    from omnicare.access.roles import PHYSICIAN, role_assign

    role_assign(user=user, role=PHYSICIAN)
    seed(practitioner(user.username), patient("p1", "One"), care_team("p1", [user.username]))
    return user


def test_discovery_lists_both_hooks_with_prefetch(client: Any, db: Any) -> None:
    r = client.get("/cds-services")
    assert r.status_code == 200
    services = {s["id"]: s for s in r.json()["services"]}
    assert services[SIGN]["hook"] == "order-sign" and services[SELECT]["hook"] == "order-select"
    for s in services.values():
        assert s["prefetch"]["allergies"] == "AllergyIntolerance?patient={{context.patientId}}"
        assert {"patient", "medications", "allergies", "labs"} <= set(s["prefetch"]) and s["description"]


def test_order_sign_with_prefetch_gives_a_critical_allergy_card(client: Any, doctor: Any, token_for: Any) -> None:
    from omnicare.audit.models import AuditEvent

    r = post(client, SIGN, order_sign(prefetch=full_prefetch()), **bearer(token_for(doctor)))
    assert r.status_code == 200, r.content
    cards = r.json()["cards"]
    assert [c["indicator"] for c in cards] == ["critical"]
    card = cards[0]
    assert "allergic to Penicillin" in card["summary"] and len(card["summary"]) <= 140
    assert card["source"]["label"].startswith("OmniCare medication safety")
    assert card["suggestions"][0]["actions"][0] == {
        "type": "delete", "description": "Cancel Amoxicillin 500 MG Oral Tablet",
        "resourceId": ["MedicationRequest/draft-1"]}
    assert card["overrideReasons"] and all({"system", "code", "display"} <= set(x) for x in card["overrideReasons"])
    ev = AuditEvent.objects.filter(action="cds-hooks").order_by("-id").first()
    assert ev is not None and ev.patient_ids == ["p1"]
    assert ev.detail["data"] == "prefetch" and ev.detail["cards"] == 1


def test_prefetch_is_used_and_nothing_else(client: Any, doctor: Any, token_for: Any) -> None:
    # The server holds a penicillin allergy for p1, but the prefetch (what the calling EHR knows) has none:
    # the answer follows the prefetch.
    seed(penicillin_allergy("al-server"))
    pre = full_prefetch()
    pre["allergies"] = searchset()
    r = post(client, SIGN, order_sign(prefetch=pre), **bearer(token_for(doctor)))
    assert r.status_code == 200 and r.json()["cards"] == []


def test_internal_caller_without_prefetch_reads_its_own_chart(client: Any, doctor: Any, token_for: Any) -> None:
    seed(penicillin_allergy("al-server"))
    r = post(client, SIGN, order_sign(prefetch=None), **bearer(token_for(doctor)))
    assert r.status_code == 200, r.content
    assert [c["indicator"] for c in r.json()["cards"]] == ["critical"]


def test_internal_caller_outside_care_team_is_refused(client: Any, db: Any, other_user: Any, token_for: Any) -> None:
    from omnicare.access.roles import PHYSICIAN, role_assign

    role_assign(user=other_user, role=PHYSICIAN)
    seed(patient("p1", "One"), penicillin_allergy("al-server"))
    r = post(client, SIGN, order_sign(prefetch=None), **bearer(token_for(other_user)))
    assert r.status_code == 403


def test_order_select_checks_the_selection_against_other_drafts(client: Any, doctor: Any, token_for: Any) -> None:
    body = order_sign(prefetch={"medications": searchset(), "allergies": searchset(), "labs": searchset()},
                      drafts=[{"resourceType": "MedicationRequest", "id": "d-sil", "status": "draft",
                               "intent": "proposal", "medicationCodeableConcept": {"text": "Sildenafil 50 mg"}},
                              {"resourceType": "MedicationRequest", "id": "d-gtn", "status": "draft",
                               "intent": "proposal", "medicationCodeableConcept": {"text": "Nitroglycerin 0.4 mg"}}])
    body["hook"] = "order-select"
    body["context"]["selections"] = ["MedicationRequest/d-sil"]
    r = post(client, SELECT, body, **bearer(token_for(doctor)))
    assert r.status_code == 200, r.content
    (card,) = r.json()["cards"]
    assert card["indicator"] == "critical" and "Sildenafil" in card["summary"]


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda b: b.pop("hook"), "hook"),
    (lambda b: b.__setitem__("hook", "patient-view"), "answers the order-sign hook"),
    (lambda b: b.pop("hookInstance"), "hookInstance"),
    (lambda b: b.__setitem__("context", []), "context must be an object"),
    (lambda b: b["context"].pop("patientId"), "context.patientId"),
    (lambda b: b["context"].pop("userId"), "context.userId"),
    (lambda b: b["context"].__setitem__("draftOrders", [1, 2]), "draftOrders must be a FHIR Bundle"),
    (lambda b: b["context"]["draftOrders"]["entry"].append({"resource": "x"}), "entry[1].resource"),
    (lambda b: b.__setitem__("prefetch", "all"), "prefetch must be an object"),
])
def test_malformed_requests_are_400_with_a_clear_message(client: Any, doctor: Any, token_for: Any, mutate: Any,
                                                         message: str) -> None:
    body = order_sign(prefetch=full_prefetch())
    mutate(body)
    r = post(client, SIGN, body, **bearer(token_for(doctor)))
    assert r.status_code == 400, r.content
    out = r.json()
    assert out["resourceType"] == "OperationOutcome" and message in out["issue"][0]["diagnostics"]


def test_not_json_unknown_service_and_selection_errors(client: Any, doctor: Any, token_for: Any) -> None:
    auth = bearer(token_for(doctor))
    assert post(client, SIGN, b"{not json", **auth).status_code == 400
    assert post(client, "no-such-service", order_sign(prefetch=full_prefetch()), **auth).status_code == 404
    body = order_sign(prefetch=full_prefetch())
    body["hook"] = "order-select"
    body["context"]["selections"] = ["MedicationRequest/not-there"]
    r = post(client, SELECT, body, **auth)
    assert r.status_code == 400 and "not in draftOrders" in r.json()["issue"][0]["diagnostics"]


def test_no_credentials_is_401(client: Any, db: Any) -> None:
    assert post(client, SIGN, order_sign(prefetch=full_prefetch())).status_code == 401
    assert post(client, SIGN, order_sign(prefetch=full_prefetch()), **bearer("garbage")).status_code == 401


# ------------------------------------------------------------------------------------------------ JWT clients


@pytest.fixture
def ehr_key(db: Any) -> Any:
    from omnicare.cds.services import client_register

    key = ec.generate_private_key(ec.SECP384R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": "ehr-key-1", "alg": "ES384", "use": "sig"})
    client_register(client_id="https://ehr.example.org", name="Example EHR", jwks={"keys": [public]})
    return key


def client_jwt(key: Any, *, aud: str = f"http://testserver/cds-services/{SIGN}", iss: str = "https://ehr.example.org",
               exp_in: int = 240, jti: str | None = None, kid: str = "ehr-key-1") -> str:
    now = int(time.time())
    return jwt.encode({"iss": iss, "aud": aud, "exp": now + exp_in, "iat": now, "jti": jti or str(uuid.uuid4())},
                      key, algorithm="ES384", headers={"kid": kid, "jku": "https://ehr.example.org/jwks"})


def test_registered_client_jwt_is_verified_and_used_once(client: Any, ehr_key: Any) -> None:
    token = client_jwt(ehr_key)
    r = post(client, SIGN, order_sign(prefetch=full_prefetch()), **bearer(token))
    assert r.status_code == 200, r.content
    assert [c["indicator"] for c in r.json()["cards"]] == ["critical"]
    replay = post(client, SIGN, order_sign(prefetch=full_prefetch()), **bearer(token))
    assert replay.status_code == 401 and "replay" in replay.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("bad", ["wrong-aud", "other-key", "expired", "unknown-iss", "too-long", "unknown-kid"])
def test_bad_client_jwts_are_refused(client: Any, ehr_key: Any, bad: str) -> None:
    token = {
        "wrong-aud": lambda: client_jwt(ehr_key, aud="http://testserver/cds-services/other"),
        "other-key": lambda: client_jwt(ec.generate_private_key(ec.SECP384R1())),
        "expired": lambda: client_jwt(ehr_key, exp_in=-120),
        "unknown-iss": lambda: client_jwt(ehr_key, iss="https://evil.example"),
        "too-long": lambda: client_jwt(ehr_key, exp_in=3600),
        "unknown-kid": lambda: client_jwt(ehr_key, kid="nope"),
    }[bad]()
    r = post(client, SIGN, order_sign(prefetch=full_prefetch()), **bearer(token))
    assert r.status_code == 401, r.content


def test_jwt_client_without_prefetch_gets_412(client: Any, ehr_key: Any) -> None:
    r = post(client, SIGN, order_sign(prefetch=None), **bearer(client_jwt(ehr_key)))
    assert r.status_code == 412 and "prefetch" in r.json()["issue"][0]["diagnostics"]


def test_private_keys_are_not_registered(db: Any) -> None:
    from omnicare.cds.services import client_register
    from omnicare.core.errors import BadRequest

    key = ec.generate_private_key(ec.SECP384R1())
    private = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    with pytest.raises(BadRequest):
        client_register(client_id="x", name="x", jwks={"keys": [private]})
