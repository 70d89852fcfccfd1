"""Create / read / vread / update / delete / history through the REST API."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from .conftest import Fhir, outcome_of, patient

pytestmark = pytest.mark.django_db


def test_create_assigns_id_and_returns_201_location_etag(fhir: Fhir) -> None:
    r = fhir.post("/Patient", patient(id="client-chosen"))
    assert r.status_code == 201
    body = r.json()
    assert body["id"] != "client-chosen"  # POST ignores the client id
    assert body["meta"]["versionId"] == "1"
    assert r["ETag"] == 'W/"1"'
    assert r["Location"].endswith(f"/fhir/R4/Patient/{body['id']}/_history/1")
    assert r["Content-Type"].startswith("application/fhir+json")
    assert parsedate_to_datetime(r["Last-Modified"]) is not None


def test_read_returns_the_stored_resource_with_headers(fhir: Fhir) -> None:
    created = fhir.create(patient())
    r = fhir.get(f"/Patient/{created['id']}")
    assert r.status_code == 200
    assert r.json() == created
    assert r["ETag"] == 'W/"1"'
    assert "Last-Modified" in r


def test_unknown_elements_and_extensions_are_preserved_exactly(fhir: Fhir) -> None:
    sent: dict[str, Any] = {
        "resourceType": "Patient",
        "meta": {"tag": [{"system": "urn:test", "code": "t1"}]},
        "extension": [{"url": "http://example.org/fav-colour", "valueString": "teal"}],
        "name": [{"family": "Ng", "given": ["Li"], "x-local-note": {"nested": [1, 2.5, None, True]}}],
        "birthDate": "1980-02-29",
        "_birthDate": {"extension": [{"url": "http://example.org/precision", "valueCode": "day"}]},
        "futureElement": {"anything": ["goes", {"deep": "ümlaut ✓"}]},
        "modifierExtension": [],
    }
    created = fhir.create(sent)
    stored = fhir.get(f"/Patient/{created['id']}").json()
    for key, value in sent.items():
        if key != "meta":
            assert stored[key] == value, key
    assert stored["meta"]["tag"] == sent["meta"]["tag"]
    assert stored["meta"]["versionId"] == "1"


def test_update_bumps_version_and_vread_returns_each_version(fhir: Fhir) -> None:
    created = fhir.create(patient(family="Old"))
    pid = created["id"]
    r = fhir.put(f"/Patient/{pid}", patient(family="New", id=pid))
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2"
    assert r["ETag"] == 'W/"2"'
    assert fhir.get(f"/Patient/{pid}").json()["name"][0]["family"] == "New"
    v1 = fhir.get(f"/Patient/{pid}/_history/1")
    assert v1.status_code == 200 and v1.json()["name"][0]["family"] == "Old" and v1["ETag"] == 'W/"1"'
    assert fhir.get(f"/Patient/{pid}/_history/2").json()["name"][0]["family"] == "New"
    assert fhir.get(f"/Patient/{pid}/_history/3").status_code == 404


def test_put_to_new_id_creates_with_client_id(fhir: Fhir) -> None:
    r = fhir.put("/Patient/my-uuid-1", patient(id="my-uuid-1"))
    assert r.status_code == 201
    assert r["Location"].endswith("/Patient/my-uuid-1/_history/1")
    assert fhir.get("/Patient/my-uuid-1").json()["id"] == "my-uuid-1"
    # Replaying the same PUT is an update, never a duplicate.
    assert fhir.put("/Patient/my-uuid-1", patient(id="my-uuid-1")).status_code == 200
    assert fhir.get("/Patient?_id=my-uuid-1").json()["total"] == 1


def test_if_match_current_version_succeeds_stale_gets_412(fhir: Fhir) -> None:
    pid = fhir.create(patient())["id"]
    ok = fhir.put(f"/Patient/{pid}", patient(family="A", id=pid), HTTP_IF_MATCH='W/"1"')
    assert ok.status_code == 200
    stale = fhir.put(f"/Patient/{pid}", patient(family="B", id=pid), HTTP_IF_MATCH='W/"1"')
    assert stale.status_code == 412
    assert outcome_of(stale)["issue"][0]["code"] == "conflict"
    assert fhir.get(f"/Patient/{pid}").json()["name"][0]["family"] == "A"


def test_delete_tombstones_read_410_history_keeps_it(fhir: Fhir) -> None:
    pid = fhir.create(patient())["id"]
    r = fhir.delete(f"/Patient/{pid}")
    assert r.status_code == 204
    gone = fhir.get(f"/Patient/{pid}")
    assert gone.status_code == 410
    assert outcome_of(gone)["issue"][0]["code"] == "deleted"
    hist = fhir.get(f"/Patient/{pid}/_history").json()
    assert hist["type"] == "history" and hist["total"] == 2
    newest = hist["entry"][0]
    assert newest["request"]["method"] == "DELETE" and "resource" not in newest
    assert hist["entry"][1]["resource"]["meta"]["versionId"] == "1"
    # The old version is still readable; the deletion version is 410.
    assert fhir.get(f"/Patient/{pid}/_history/1").status_code == 200
    assert fhir.get(f"/Patient/{pid}/_history/2").status_code == 410
    # Deleted resources leave search.
    assert fhir.get(f"/Patient?_id={pid}").json()["total"] == 0
    # Deleting again is an idempotent no-op; a deleted Patient is not recreated (issue 10: only the
    # integration role may), other records are, and their version numbers continue.
    assert fhir.delete(f"/Patient/{pid}").status_code == 204
    assert fhir.put(f"/Patient/{pid}", patient(id=pid)).status_code == 403
    enc = {"resourceType": "Encounter", "id": "e-re", "status": "finished",
           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}
    assert fhir.put("/Encounter/e-re", enc).status_code == 201
    assert fhir.delete("/Encounter/e-re").status_code == 204
    again = fhir.put("/Encounter/e-re", enc)
    assert again.status_code == 201 and again.json()["meta"]["versionId"] == "3"


def test_read_unknown_id_is_404(fhir: Fhir) -> None:
    r = fhir.get("/Patient/does-not-exist")
    assert r.status_code == 404
    assert outcome_of(r)["issue"][0]["code"] == "not-found"


def test_type_and_system_history_newest_first_with_paging(fhir: Fhir) -> None:
    a = fhir.create(patient(family="A"))["id"]
    fhir.put(f"/Patient/{a}", patient(family="A2", id=a))
    fhir.create({"resourceType": "Practitioner", "name": [{"family": "Who"}]})
    fhir.create(patient(family="B"))
    hist = fhir.get("/Patient/_history").json()
    assert hist["type"] == "history" and hist["total"] == 3
    assert [e["resource"]["name"][0]["family"] for e in hist["entry"]] == ["B", "A2", "A"]
    # Page through the system history two at a time, following next links to the end.
    seen: list[str] = []
    url = "/_history?_count=2"
    while url:
        page = fhir.get(url).json()
        seen += [e["resource"]["resourceType"] for e in page["entry"]]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = nxt[0].split("/fhir/R4", 1)[1] if nxt else ""
    assert seen == ["Patient", "Practitioner", "Patient", "Patient"]


def test_prefer_return_minimal_sends_no_body(fhir: Fhir) -> None:
    r = fhir.post("/Patient", patient(), HTTP_PREFER="return=minimal")
    assert r.status_code == 201 and r.content == b"" and r["Location"]


def test_json_content_type_is_accepted_too(fhir: Fhir) -> None:
    r = fhir.post("/Patient", patient(), content_type="application/json; charset=utf-8")
    assert r.status_code == 201


def test_all_supported_types_round_trip(fhir: Fhir) -> None:
    pid = fhir.create(patient())["id"]
    subject = {"reference": f"Patient/{pid}"}
    samples = [
        {"resourceType": "Practitioner", "name": [{"family": "House"}]},
        {
            "resourceType": "CareTeam",
            "subject": subject,
            "participant": [{"member": {"reference": "Practitioner/x"}}],
        },
        {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "subject": subject},
        {"resourceType": "Observation", "status": "final", "code": {"text": "hr"}, "subject": subject},
        {"resourceType": "Condition", "subject": subject},
        {"resourceType": "AllergyIntolerance", "patient": subject},
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "subject": subject,
            "medicationCodeableConcept": {"text": "x"},
        },
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": subject,
            "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}],
        },
        {"resourceType": "Communication", "status": "completed", "subject": subject},
    ]
    for sample in samples:
        created = fhir.create(sample)
        assert fhir.get(f"/{sample['resourceType']}/{created['id']}").json() == created


def test_if_none_match_current_version_is_304(fhir: Fhir) -> None:
    pid = fhir.create(patient())["id"]
    assert fhir.get(f"/Patient/{pid}", HTTP_IF_NONE_MATCH='W/"1"').status_code == 304
    fhir.put(f"/Patient/{pid}", patient(family="Changed", id=pid))
    fresh = fhir.get(f"/Patient/{pid}", HTTP_IF_NONE_MATCH='W/"1"')
    assert fresh.status_code == 200 and fresh.json()["name"][0]["family"] == "Changed"


def test_bundle_accepted_with_and_without_trailing_slash(fhir: Fhir) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": []}
    assert fhir.post("", bundle).status_code == 200
    assert fhir.post("/", bundle).status_code == 200
