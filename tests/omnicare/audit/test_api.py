"""Auditors read the trail as FHIR AuditEvent resources; nobody else can."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from omnicare.access.services import token_create
from omnicare.audit import services
from omnicare.audit.fhir import to_fhir
from omnicare.audit.models import AuditEvent
from omnicare.sync import device_audit

pytestmark = pytest.mark.django_db


def _client(user: Any) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=user, name='t')}")


def test_every_event_kind_is_a_valid_r4_audit_event(
    make_user: Callable[..., Any], register_device: Callable[..., Any]
) -> None:
    from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent

    doc = make_user("dr.valid", "physician")
    register_device(doc, "d1", ["p1"])
    services.audit_record(user=doc, action="read", resource_type="Observation", resource_id="o1", patient_ids=["p1"])
    services.audit_record(user=doc, action="search", resource_type="Observation", patient_ids=["p1"],
                          outcome="denied")
    services.audit_record(user=doc, action="break-glass-start", resource_type="Patient", resource_id="p2",
                          patient_ids=["p2"], category="security", purpose="ETREAT", detail={"reason": "x" * 12})
    device_audit.device_events_ingest(user=doc, device_id="d1", events=[
        services.DeviceEvent(seq=1, action="update", occurred=AuditEvent.objects.first().received_at,  # type: ignore[union-attr]
                             resource_type="Condition", resource_id="c1", patient_ids=["p1"])])
    services.audit_record(user=None, action="login", category="security", outcome="failure",
                          detail={"username": "mallory"})
    services.audit_sequence()
    for ev in AuditEvent.objects.all():
        resource = to_fhir(ev)
        FhirAuditEvent.model_validate(resource)  # raises on anything R4 does not allow
    start = to_fhir(AuditEvent.objects.get(action="break-glass-start"))
    assert start["subtype"][0]["code"] == "110127" and start["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"
    denied = to_fhir(AuditEvent.objects.get(outcome="denied"))
    assert denied["outcome"] == "4" and denied["action"] == "E"


def test_auditor_gets_a_bundle_and_the_search_itself_is_audited(
    make_user: Callable[..., Any], http_mounted: Callable[[str], None]
) -> None:
    http_mounted("/api/audit/events")
    doc = make_user("dr.x", "physician")
    auditor = make_user("aud", "auditor")
    for i in range(5):
        services.audit_record(user=doc, action="read", resource_type="Patient", resource_id=f"p{i}",
                              patient_ids=[f"p{i}"])
    services.audit_sequence()
    client = _client(auditor)
    r = client.get("/api/audit/events", {"_count": 2})
    assert r.status_code == 200 and r["Content-Type"].startswith("application/fhir+json")
    page = r.json()
    assert page["resourceType"] == "Bundle" and [e["resource"]["id"] for e in page["entry"]] == ["1", "2"]
    nxt = next(link["url"] for link in page["link"] if link["relation"] == "next")
    assert [e["resource"]["id"] for e in client.get(nxt).json()["entry"]] == ["3", "4"]
    only = client.get("/api/audit/events", {"patient": "p3"}).json()
    assert [e["resource"]["entity"][0]["what"]["reference"] for e in only["entry"]] == ["Patient/p3"]
    assert AuditEvent.objects.filter(username="aud", resource_type="AuditEvent", action="search").count() == 3


@pytest.mark.parametrize("role", ["physician", "nurse", "pharmacist", "front_desk", "administrator", None])
def test_nobody_else_reads_the_trail(
    make_user: Callable[..., Any], http_mounted: Callable[[str], None], role: str | None
) -> None:
    http_mounted("/api/audit/events")
    user = make_user("someone", *([role] if role else []))
    client = _client(user)
    for path in ("/api/audit/events", "/api/audit/checkpoints", "/api/audit/proof/consistency?first=0&second=0"):
        assert client.get(path).status_code == 403
    assert Client().get("/api/audit/events").status_code == 401


def test_checkpoints_and_proofs_over_http(make_user: Callable[..., Any], http_mounted: Callable[[str], None]) -> None:
    from omnicare.audit import merkle
    from omnicare.keys import services as keys

    http_mounted("/api/audit/checkpoints")
    auditor = make_user("aud", "auditor")
    for i in range(7):
        services.audit_record(user=auditor, action="read", resource_type="Patient", resource_id=str(i))
    services.audit_checkpoint()
    client = _client(auditor)
    cp = client.get("/api/audit/checkpoints").json()["checkpoints"][0]
    assert keys.verify(key_id=cp["keyId"], data=cp["message"].encode(), signature=bytes.fromhex(cp["signature"]))
    proof = client.get("/api/audit/proof/inclusion", {"seq": 3, "tree_size": 7}).json()
    assert merkle.verify_inclusion(leaf=bytes.fromhex(proof["leaf"]), index=2, size=7,
                                   proof=[bytes.fromhex(p) for p in proof["path"]], root_hash=bytes.fromhex(cp["root"]))
    assert client.get("/api/audit/proof/inclusion", {"seq": 9, "tree_size": 7}).status_code == 400
    assert client.get("/api/audit/proof/inclusion", {"seq": 1, "tree_size": 2**63}).status_code == 400
    assert client.get("/api/audit/events", {"after": 2**63}).status_code == 400
