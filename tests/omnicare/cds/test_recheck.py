"""Every pushed or REST-created order is re-checked on the server with the knowledge base the device used."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
from django.test import Client

from pyclient.cds import Context, KnowledgeBase, check, default_kb, shipped_bytes
from pyclient.cds.decisions import annotate_order, decide, detected_issue, detected_issue_id
from tests.omnicare.cds.test_hooks import penicillin_allergy
from tests.omnicare.sync.conftest import SyncClient, care_team, patient, practitioner, put, seed

FHIR = "application/fhir+json"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def doctor(db: Any, user: Any) -> Any:
    from omnicare.access.roles import PHYSICIAN, role_assign

    role_assign(user=user, role=PHYSICIAN)
    seed(practitioner(user.username), patient("p1", "One"), care_team("p1", [user.username]), penicillin_allergy())
    return user


def order(mid: str, text: str = "Amoxicillin 500 mg three times daily", status: str = "active") -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": mid, "status": status, "intent": "order",
            "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": {"text": text}}


def issues(client: Client) -> list[dict[str, Any]]:
    r = client.get("/fhir/R4/DetectedIssue", {"patient": "p1"})
    assert r.status_code == 200, r.content
    return [e["resource"] for e in r.json().get("entry", [])]


def test_rest_created_order_with_unacknowledged_critical_alert_gets_a_detected_issue(
        doctor: Any, token_for: Any, django_capture_on_commit_callbacks: Any) -> None:
    from omnicare.audit.models import AuditEvent
    from omnicare.cds.models import OrderCheck

    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(doctor)}")
    with django_capture_on_commit_callbacks(execute=True):
        body = order("x")
        del body["id"]
        r = client.post("/fhir/R4/MedicationRequest", json.dumps(body), content_type=FHIR)
    assert r.status_code == 201, r.content
    mid = r.json()["id"]
    found = issues(client)
    assert len(found) == 1
    issue = found[0]
    assert issue["status"] == "preliminary" and issue["severity"] == "high"
    assert issue["implicated"][0] == {"reference": f"MedicationRequest/{mid}"}
    assert {"reference": "AllergyIntolerance/al-1"} in issue["implicated"]
    assert issue["mitigation"][0]["action"]["coding"][0]["code"] == "unacknowledged"
    assert "ALGY" in [c["code"] for c in issue["code"]["coding"]]
    check_row = OrderCheck.objects.get(resource_id=mid)
    assert (check_row.critical, check_row.unacknowledged, check_row.kb_version) == (1, 1, default_kb().version)
    assert AuditEvent.objects.filter(action="create", resource_type="DetectedIssue",
                                     resource_id=issue["id"]).exists()


def test_pushed_order_acknowledged_on_the_device_gets_no_server_issue(
        doctor: Any, token_for: Any, django_capture_on_commit_callbacks: Any) -> None:
    from omnicare.cds.models import OrderCheck

    kb = default_kb()
    draft = order(str(uuid.uuid4()))
    chart = Context([penicillin_allergy()])
    cards = check([draft], chart, kb=kb)
    decision = decide(cards, decision="overridden", reason_code="tolerated-before")
    device_issue = detected_issue(cards[0], decision=decision.decision, reason=decision.reason, patient_id="p1",
                                  kb=kb, when="2026-12-01T10:00:00Z")
    annotated = annotate_order(draft, kb=kb, acknowledged=cards)
    sync = SyncClient(Client(HTTP_AUTHORIZATION=f"Bearer {token_for(doctor)}"))
    with django_capture_on_commit_callbacks(execute=True):
        results = sync.push(put(annotated, None), put(device_issue, None))
    assert [r["status"] for r in results] == ["applied", "applied"]
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(doctor)}")
    found = issues(client)
    assert [i["id"] for i in found] == [detected_issue_id(cards[0].uuid)]
    assert found[0]["status"] == "final"
    assert found[0]["mitigation"][0]["action"]["coding"][1]["code"] == "tolerated-before"
    row = OrderCheck.objects.get(resource_id=draft["id"])
    assert (row.critical, row.unacknowledged, row.device_kb_version) == (1, 0, kb.version)


def test_pushed_order_without_acknowledgement_gets_an_issue(
        doctor: Any, token_for: Any, django_capture_on_commit_callbacks: Any) -> None:
    sync = SyncClient(Client(HTTP_AUTHORIZATION=f"Bearer {token_for(doctor)}"))
    with django_capture_on_commit_callbacks(execute=True):
        (res,) = sync.push(put(order(str(uuid.uuid4())), None))
    assert res["status"] == "applied"
    assert [i["status"] for i in issues(Client(HTTP_AUTHORIZATION=f"Bearer {token_for(doctor)}"))] == [
        "preliminary"]


def test_recheck_uses_the_knowledge_base_version_the_device_used(
        doctor: Any, token_for: Any, django_capture_on_commit_callbacks: Any) -> None:
    from omnicare.cds.models import OrderCheck
    from omnicare.cds.services import bundle_publish

    older = json.loads(shipped_bytes())
    older["version"] = "2026.11.1"
    older["allergyRules"] = []
    # An older base that did not yet know that amoxicillin is a penicillin.
    older["ingredients"]["amoxicillin"]["classes"] = []
    bundle_publish(kind="kb", data=older)
    old_kb = KnowledgeBase.from_json(older)
    draft = order(str(uuid.uuid4()))
    assert check([draft], Context([penicillin_allergy()]), kb=old_kb) == []
    annotated = annotate_order(draft, kb=old_kb, acknowledged=[])
    sync = SyncClient(Client(HTTP_AUTHORIZATION=f"Bearer {token_for(doctor)}"))
    with django_capture_on_commit_callbacks(execute=True):
        sync.push(put(annotated, None))
    row = OrderCheck.objects.get(resource_id=draft["id"])
    assert (row.kb_version, row.device_kb_version, row.critical) == ("2026.11.1", "2026.11.1", 0)
    assert issues(Client(HTTP_AUTHORIZATION=f"Bearer {token_for(doctor)}")) == []


def test_stopped_orders_and_repeated_rechecks_create_nothing_new(
        doctor: Any, token_for: Any, django_capture_on_commit_callbacks: Any) -> None:
    from omnicare.cds.services import orders_recheck

    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(doctor)}")
    with django_capture_on_commit_callbacks(execute=True):
        r = client.put("/fhir/R4/MedicationRequest/mr-stopped", json.dumps(order("mr-stopped", status="stopped")),
                       content_type=FHIR)
    assert r.status_code == 201
    assert issues(client) == []
    assert orders_recheck(keys=[("mr-stopped", 1)]) == 0  # already checked: idempotent


def test_a_bulk_import_is_rechecked_through_celery(db: Any, eager_celery: Any,
                                                   django_capture_on_commit_callbacks: Any) -> None:
    from omnicare.cds.models import OrderCheck
    from omnicare.cds.services import INLINE_RECHECK_MAX
    from omnicare.fhir.services import resources_import

    seed(patient("p1", "One"), penicillin_allergy())
    many = [order(f"bulk-{i}", text="Lisinopril 10 mg") for i in range(INLINE_RECHECK_MAX + 5)]
    many.append(order("bulk-amox"))
    with django_capture_on_commit_callbacks(execute=True):
        resources_import(resources=copy.deepcopy(many))
    assert OrderCheck.objects.filter(resource_id__startswith="bulk-").count() == len(many)
    assert OrderCheck.objects.get(resource_id="bulk-amox").unacknowledged == 1


def test_dashboard_lists_order_checks_without_clinical_text(
        doctor: Any, token_for: Any, django_capture_on_commit_callbacks: Any, django_user_model: Any) -> None:
    from omnicare.access.roles import ADMINISTRATOR, role_assign

    sync = SyncClient(Client(HTTP_AUTHORIZATION=f"Bearer {token_for(doctor)}"))
    mid = str(uuid.uuid4())
    with django_capture_on_commit_callbacks(execute=True):
        sync.push(put(order(mid), None))
    admin = django_user_model.objects.create_user(username="ad.min", password="pw-for-admin-42")
    role_assign(user=admin, role=ADMINISTRATOR)
    web = Client()
    web.force_login(admin)
    r = web.get("/admin/cds/ordercheck/")
    assert r.status_code == 200
    page = r.content.decode()
    assert mid in page and "Amoxicillin" not in page and "Penicillin" not in page


def test_management_commands(db: Any, tmp_path: Any) -> None:
    from django.core.management import CommandError, call_command

    from omnicare.cds.models import CdsClient, KnowledgeBundle

    call_command("cds_publish")
    assert set(KnowledgeBundle.objects.values_list("kind", flat=True)) == {"kb", "guidelines"}
    data = json.loads(shipped_bytes())
    data["version"] = "2026.12.5"
    f = tmp_path / "kb.json"
    f.write_text(json.dumps(data))
    call_command("cds_publish", "--kind", "kb", "--file", str(f))
    assert KnowledgeBundle.objects.filter(kind="kb", version="2026.12.5").exists()
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "x"}')
    with pytest.raises(CommandError):
        call_command("cds_publish", "--kind", "kb", "--file", str(bad))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                                          "kid": "k1"}]}))
    call_command("cds_client_register", "--client-id", "https://ehr.example", "--name", "EHR", "--jwks", str(jwks))
    assert CdsClient.objects.get(client_id="https://ehr.example").active
