"""Bad input from the adversarial review (issue 10, items 17 and 19): a clear 4xx OperationOutcome, never a 500,
nothing written. Runs on SQLite and on PostgreSQL (``DATABASE_URL``)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from tests.omnicare.fhir.conftest import row_counts
from tests.omnicare.sync.conftest import care_team, observation, patient, practitioner, put, seed

pytestmark = pytest.mark.django_db

DEEP = b"[" * 100_000


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def ward(user: Any) -> None:
    from omnicare.access.roles import PHYSICIAN, role_assign

    role_assign(user=user, role=PHYSICIAN)
    seed(practitioner(user.username), patient("p1", "Lefèvre"), patient("p9", "Outside"),
         care_team("p1", [user.username]), observation("o1", "p1"))


def _outcome(r: Any) -> dict[str, Any]:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body


@pytest.mark.parametrize(
    ("path", "ctype"),
    [("/api/sync/push", "application/json"), ("/api/sync/pull", "application/json"),
     ("/fhir/R4/Observation", "application/fhir+json"), ("/fhir/R4/", "application/fhir+json"),
     ("/api/audit/device-events", "application/json"),
     ("/api/sync/conflicts/00000000-0000-0000-0000-000000000000/resolve", "application/json")],
)
def test_100000_nested_brackets_are_a_4xx_outcome(api: Client, ward: None, path: str, ctype: str) -> None:
    before = row_counts()
    r = api.post(path, DEEP, content_type=ctype)
    assert 400 <= r.status_code < 500, (r.status_code, r.content[:300])
    assert "nested deeper" in _outcome(r)["issue"][0]["diagnostics"]
    assert row_counts() == before


def test_nesting_of_a_real_resource_is_fine(api: Client, ward: None) -> None:
    obs = observation("o-deep-ok", "p1")
    obs["extension"] = [{"url": "urn:x", "extension": [{"url": "urn:y", "valueString": "ok"}]}]
    r = api.put("/fhir/R4/Observation/o-deep-ok", json.dumps(obs), content_type="application/fhir+json")
    assert r.status_code == 201, r.content


def test_lone_surrogate_in_a_pushed_resource_is_a_400(api: Client, ward: None) -> None:
    before = row_counts()
    body = ('{"deviceId":"d1","mutations":[{"mutationId":"MID","op":"put","resourceType":"Observation",'
            '"id":"o-sur","baseVersion":null,"resource":{"resourceType":"Observation","id":"o-sur",'
            '"status":"final","code":{"text":"bad \\ud800 text"},"subject":{"reference":"Patient/p1"}}}]}'
            ).replace("MID", str(uuid.uuid4()))
    r = api.post("/api/sync/push", body, content_type="application/json")
    assert r.status_code == 400, r.content
    assert "surrogate" in _outcome(r)["issue"][0]["diagnostics"]
    assert row_counts() == before
    # A proper pair (an emoji written as \\ud83d\\ude00) is a normal character and is accepted.
    ok = body.replace("\\ud800", "\\ud83d\\ude00").replace('"o-sur"', '"o-emoji"')
    r = api.post("/api/sync/push", ok, content_type="application/json")
    assert r.status_code == 200 and r.json()["results"][0]["status"] == "applied", r.content


def test_lone_surrogate_on_fhir_create_is_a_400(api: Client, ward: None) -> None:
    r = api.post("/fhir/R4/Patient", '{"resourceType":"Patient","name":[{"family":"\\udc00"}]}',
                 content_type="application/fhir+json")
    assert r.status_code == 400, r.content


def test_patient_search_with_3000_ids_is_a_clear_400_and_500_ids_work(api: Client, ward: None) -> None:
    ids = [f"id-{i}" for i in range(3000)]
    r = api.get("/fhir/R4/Patient", {"_id": ",".join(ids)})
    assert r.status_code == 400, (r.status_code, r.content[:300])
    assert _outcome(r)["issue"][0]["code"] == "too-costly"
    r = api.get("/fhir/R4/Patient", {"_id": ",".join(ids[:500] + ["p1"])})
    assert r.status_code == 200, r.content[:300]
    assert [e["resource"]["id"] for e in r.json()["entry"] if e["search"]["mode"] == "match"] == ["p1"]
    many = "&".join(f"family=x{i}" for i in range(60))
    assert api.get("/fhir/R4/Patient?" + many).status_code == 400


@pytest.mark.parametrize("device_id", ["bad\x00id", "../../../etc", "tablet-\U0001f600", "", "x" * 65, "a b"])
def test_device_id_charset_is_one_rule_on_every_route(api: Client, ward: None, device_id: str) -> None:
    from omnicare.sync.models import Device

    before = row_counts()
    mutation = put(observation("o-dev", "p1"), None)
    push = api.post("/api/sync/push", json.dumps({"deviceId": device_id, "mutations": [mutation]}),
                    content_type="application/json")
    assert push.status_code == 400, push.content
    pull = api.post("/api/sync/pull?" + "deviceId=" + json.dumps(device_id)[1:-1], json.dumps({"cursor": None}),
                    content_type="application/json")
    if device_id:  # an empty query value means "no device id"
        assert pull.status_code == 400, pull.content
    for path in ("/api/sync/devices", "/api/sync/snapshots"):
        r = api.post(path, json.dumps({"deviceId": device_id}), content_type="application/json")
        assert r.status_code == 400, (path, r.content)
    assert row_counts() == before
    assert not Device.objects.exists()


def test_nul_in_device_event_detail_is_a_400(api: Client, ward: None) -> None:
    from omnicare.audit.models import AuditEvent

    before = AuditEvent.objects.count()
    body = json.dumps({"deviceId": "tablet-1", "events": [
        {"seq": 1, "action": "read", "occurred": timezone.now().isoformat(), "resourceType": "Patient",
         "id": "p1", "patientIds": ["p1"], "detail": {"note": "a\x00b"}}]})
    assert "\\u0000" in body
    r = api.post("/api/audit/device-events", body, content_type="application/json")
    assert r.status_code == 400, (r.status_code, r.content)
    assert "NUL" in _outcome(r)["issue"][0]["diagnostics"]
    assert AuditEvent.objects.count() == before


def test_nul_in_a_fhir_resource_is_a_400(api: Client, ward: None) -> None:
    before = row_counts()
    r = api.post("/fhir/R4/Patient", json.dumps({"resourceType": "Patient", "name": [{"family": "a\x00"}]}),
                 content_type="application/fhir+json")
    assert r.status_code == 400
    assert row_counts() == before


def test_lenient_search_reports_ignored_parameters_in_the_bundle(api: Client, ward: None) -> None:
    for prefer in ("handling=lenient", None):
        headers = {"HTTP_PREFER": prefer} if prefer else {}
        r = api.get("/fhir/R4/Observation", {"subject.name": "Lefèvre", "_has:Condition:subject:code": "x",
                                              "status": "final"}, **headers)
        assert r.status_code == 200, r.content
        entries = r.json()["entry"]
        outcomes = [e for e in entries if e["search"]["mode"] == "outcome"]
        assert len(outcomes) == 1, entries
        issue = outcomes[0]["resource"]["issue"][0]
        assert issue["severity"] == "warning" and issue["code"] == "not-supported"
        assert set(issue["expression"]) == {"subject.name", "_has:Condition:subject:code"}
        assert [e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"] == ["o1"]
    strict = api.get("/fhir/R4/Observation", {"_has:Condition:subject:code": "x"}, HTTP_PREFER="handling=strict")
    assert strict.status_code == 400


def _break_glass(client: Client, patient_id: str) -> Any:
    return client.post("/api/access/break-glass", json.dumps(
        {"patientId": patient_id, "reason": "unconscious patient in the emergency room"}),
        content_type="application/json")


def test_break_glass_refuses_a_patient_that_does_not_exist(api: Client, ward: None) -> None:
    from omnicare.access.models import EmergencyAccessGrant

    r = _break_glass(api, "no-such-patient")
    assert r.status_code == 404, r.content
    assert not EmergencyAccessGrant.objects.exists()


def test_break_glass_twice_gives_the_same_grant(api: Client, ward: None) -> None:
    from omnicare.access.models import EmergencyAccessGrant

    ids = {_break_glass(api, "p9").json()["id"] for _ in range(5)}
    assert len(ids) == 1
    assert EmergencyAccessGrant.objects.count() == 1


def test_ending_an_expired_grant_records_the_stop(api: Client, ward: None, user: Any) -> None:
    from omnicare.access.models import EmergencyAccessGrant
    from omnicare.audit.models import AuditEvent

    gid = _break_glass(api, "p9").json()["id"]
    EmergencyAccessGrant.objects.filter(pk=gid).update(expires=timezone.now() - timedelta(minutes=1))
    r = api.post(f"/api/access/break-glass/{gid}/end")
    assert r.status_code == 409, r.content
    grant = EmergencyAccessGrant.objects.get(pk=gid)
    assert grant.stop_event_seq is not None and grant.end_reason == "expired"
    assert AuditEvent.objects.filter(seq=grant.stop_event_seq, action="break-glass-stop").exists()
    again = api.post(f"/api/access/break-glass/{gid}/end")
    assert again.status_code == 409
    assert AuditEvent.objects.filter(action="break-glass-stop").count() == 1


@pytest.mark.parametrize("path", ["/fhir/R4/Patient/p1", "/fhir/R4/Patient?family=Lef", "/fhir/R4/Patient/p1/_history",
                                  "/api/sync/conflicts", "/api/audit/events", "/fhir/R4/Patient/nope"])
def test_phi_responses_are_not_stored_by_caches(api: Client, ward: None, path: str) -> None:
    r = api.get(path)
    assert "no-store" in r["Cache-Control"], (path, r.status_code, r.get("Cache-Control"))
    api.post("/api/sync/devices", json.dumps({"deviceId": "tab-cache"}), content_type="application/json")
    pull = api.post("/api/sync/pull?deviceId=tab-cache", json.dumps({"cursor": None}), content_type="application/json")
    assert pull.status_code == 200 and "no-store" in pull["Cache-Control"], pull.content


def test_pwa_static_files_are_not_shared_with_other_origins(anon: Client) -> None:
    for path in ("/", "/sw.js", "/manifest.webmanifest"):
        r = anon.get(path, HTTP_ORIGIN="https://evil.example")
        assert r.status_code == 200, path
        assert "Access-Control-Allow-Origin" not in r, (path, r["Access-Control-Allow-Origin"])


def test_websocket_origin_rule_includes_the_port(settings: Any) -> None:
    from omnicare.core.origin import origin_allowed

    settings.CSRF_TRUSTED_ORIGINS = ["https://ehr.example.org"]
    assert origin_allowed(origin="http://127.0.0.1:8000", host="127.0.0.1:8000")
    assert not origin_allowed(origin="http://127.0.0.1:9999", host="127.0.0.1:8000")
    assert not origin_allowed(origin="http://127.0.0.1", host="127.0.0.1:8000")
    assert not origin_allowed(origin="http://evil.example:8000", host="127.0.0.1:8000")
    assert not origin_allowed(origin=None, host="127.0.0.1:8000")
    assert not origin_allowed(origin="null", host="127.0.0.1:8000")
    assert not origin_allowed(origin="http://evil.example", host="evil.example")  # not an allowed host
    assert origin_allowed(origin="https://ehr.example.org", host="10.0.0.5:8000")  # proxy rewrote Host


@pytest.mark.parametrize(("origin", "accepted"), [("http://127.0.0.1:8000", True), ("http://127.0.0.1:9999", False),
                                                   ("http://127.0.0.1", False), ("http://evil.example:8000", False)])
async def test_websocket_from_another_port_is_refused(origin: str, accepted: bool) -> None:
    """Through the real ASGI application: a page on 127.0.0.1:9999 cannot open our socket on :8000."""
    from channels.testing import WebsocketCommunicator

    from omnicare.asgi import application

    comm = WebsocketCommunicator(application, "/ws/sync",
                                 headers=[(b"host", b"127.0.0.1:8000"), (b"origin", origin.encode())])
    connected, _ = await comm.connect(timeout=5)
    assert connected is accepted
    await comm.disconnect()
