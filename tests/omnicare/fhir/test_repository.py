"""The FHIR store façade (issue 11 item 10): one ``FhirStore`` per principal does check, work and audit once.

Used here without HTTP, as any future caller with a principal would: what a clinician does through it is
recorded once, with the patients it touched; what they may not do is refused AND recorded; a write whose
audit row cannot be stored leaves nothing behind. And the REST router keeps to HTTP: it no longer audits or
checks access itself (the store does), so a new interaction cannot be added there without its record.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest
from django.db import DatabaseError

from omnicare.audit.models import AuditEvent
from omnicare.audit.services import AuditUnavailable
from omnicare.core.errors import ApiError, BadRequest, Forbidden, Unprocessable
from omnicare.fhir.models import Resource
from omnicare.fhir.repository import FhirStore
from omnicare.fhir.services import Write

REAL_ACCESS = True  # the real role matrix and care-team scope: the store must be the one calling them


@pytest.fixture
def store(user: Any, ward: None) -> FhirStore:
    """dr.test's store (the ``ward`` fixture: a physician on pat-a's care team; pat-b is someone else's)."""
    return FhirStore(user=user)


def _weight(pid: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
            "subject": {"reference": f"Patient/{pid}"}, "valueQuantity": {"value": 70, "unit": "kg"}}


def _events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def test_each_interaction_is_one_event_naming_its_patients(store: FhirStore) -> None:
    created = store.create("Observation", _weight("pat-a"))
    assert created.status == 201 and created.version is not None
    assert store.read("Observation", created.resource_id).body["valueQuantity"]["value"] == 70
    page = store.search("Observation", [("subject", "Patient/pat-a")], base_url="")
    assert [e["resource"]["id"] for e in page["entry"]] == [created.resource_id]
    assert [v.version_id for v in store.history("Observation", created.resource_id).versions] == [1]
    for action in ("create", "read", "search", "history"):
        [event] = _events(action)
        assert (event.outcome, event.patient_ids) == ("success", ["pat-a"]), action
    assert _events("create")[0].resource_id == created.resource_id and _events("create")[0].detail["version"] == 1


def test_what_the_principal_may_not_see_is_refused_and_recorded(store: FhirStore) -> None:
    with pytest.raises(Forbidden):
        store.read("Patient", "pat-b")
    with pytest.raises(Forbidden):
        store.create("Observation", _weight("pat-b"))
    assert [(e.action, e.outcome, e.patient_ids) for e in AuditEvent.objects.filter(outcome="denied")
            .order_by("id")] == [("read", "denied", ["pat-b"]), ("create", "denied", ["pat-b"])]  # whose chart
    assert not Resource.objects.filter(resource_type="Observation").exists()


def test_a_write_whose_audit_row_cannot_be_stored_is_not_written(store: FhirStore,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise DatabaseError("disk full")

    monkeypatch.setattr(type(AuditEvent.objects), "bulk_create", broken)
    with pytest.raises(AuditUnavailable):
        store.create("Observation", _weight("pat-a"))
    assert not Resource.objects.filter(resource_type="Observation").exists()


def test_a_delete_of_nothing_is_an_audited_no_op(store: FhirStore) -> None:
    result = store.delete("Observation", "never-was")
    assert result.version is None
    [event] = _events("delete")
    assert event.detail.get("noop") is True and event.resource_id == "never-was"


def test_the_rest_router_leaves_checks_and_audit_to_the_store() -> None:
    source = Path(__file__).resolve().parents[3] / "omnicare" / "fhir" / "api.py"
    tree = ast.parse(source.read_text())
    called = {n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
              for n in ast.walk(tree) if isinstance(n, ast.Call)}
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not called & {"audited", "audit_record", "append_events", "access_check"}
    assert not {m for m in imported if m and m.startswith("omnicare.audit")}
    assert not called & {"resource_read", "resource_vread", "resource_search", "resource_history",
                         "resource_create", "resource_update", "resource_delete", "bundle_process"}


# ---- batch writes: the store's policy sees every write, and a refused one is answered alone ------------------

def _obs(rid: str, pid: str) -> Write:
    return Write("Observation", rid, {**_weight(pid), "id": rid})


def test_a_batch_write_answers_each_item_and_loses_only_the_refused_one(store: FhirStore) -> None:
    before = AuditEvent.objects.count()
    first, refused, last = store.apply_each([_obs("o-a1", "pat-a"), _obs("o-b1", "pat-b"), _obs("o-a2", "pat-a")])
    assert isinstance(refused, Forbidden)  # pat-b is outside dr.test's care team
    assert not isinstance(first, ApiError) and not isinstance(last, ApiError)
    assert (first.status, last.status) == (201, 201)
    assert sorted(Resource.objects.filter(resource_type="Observation").values_list("resource_id", flat=True)) == [
        "o-a1", "o-a2"]
    assert AuditEvent.objects.count() == before  # a batch's event is its caller's (one per push / import batch)


def test_an_all_or_nothing_batch_writes_nothing_when_one_item_is_refused(store: FhirStore) -> None:
    with pytest.raises(Forbidden):
        store.apply([_obs("o-a1", "pat-a"), _obs("o-b1", "pat-b")])
    assert not Resource.objects.filter(resource_type="Observation").exists()


def test_the_engine_asks_the_stores_policy_about_every_write(user: Any, ward: None) -> None:
    asked: list[tuple[str, str, list[str]]] = []

    def policy(*, user: Any, action: str, resource_type: str, patient_ids: Any = ()) -> None:
        asked.append((action, resource_type, list(patient_ids)))
        if "pat-a" in patient_ids and action == "delete":
            raise Forbidden("no deletes here")

    custom = FhirStore(user=user, policy=policy)
    custom.apply([_obs("o-a1", "pat-a"), _obs("o-b1", "pat-b")])
    assert asked == [("create", "Observation", ["pat-a"]), ("create", "Observation", ["pat-b"])]
    [refused] = custom.apply_each([Write("Observation", "o-a1", None)])
    assert isinstance(refused, Forbidden) and Resource.objects.get(resource_id="o-a1").deleted is False
    # The system store (HL7, CDS, a trusted import) writes without a person: no author, trusted for every patient.
    [done] = FhirStore.system().apply([Write("Observation", "o-a1", None)])
    assert done.status == 204 and done.version is not None and done.version.author == ""


def test_a_body_built_in_code_is_validated_where_its_write_is_made() -> None:
    with pytest.raises(Unprocessable):  # no code: a required element
        Write.valid("Observation", "o-1", {"resourceType": "Observation", "id": "o-1", "status": "final"})
    with pytest.raises(BadRequest):
        Write.valid("Observation", "o-1", {**_weight("pat-a"), "id": "o-1", "status": "no-such-status"})
    with pytest.raises(BadRequest):
        Write.valid("Observation", "o-1", {**_weight("pat-a"), "id": "another"})


def test_no_caller_can_tell_the_write_engine_it_already_checked() -> None:
    # issue 11 item 10: the store owns the check (its policy sees every write); the flags are gone.
    from omnicare.fhir import services as svc

    for fn in (svc.resources_apply, svc.resources_apply_each):
        assert not {"validated", "authorized", "trusted"} & set(inspect.signature(fn).parameters)
