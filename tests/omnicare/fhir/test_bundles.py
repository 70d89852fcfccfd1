"""Transaction (all-or-nothing, urn:uuid rewriting) and batch (independent entries) Bundles."""

from __future__ import annotations

from typing import Any

import pytest

from omnicare.fhir.models import ResourceVersion

from .conftest import Fhir, outcome_of, patient, row_counts

pytestmark = pytest.mark.django_db

PAT = "urn:uuid:11111111-1111-4111-8111-111111111111"
ENC = "urn:uuid:22222222-2222-4222-8222-222222222222"


def tx(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post_entry(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
    if full_url:
        e["fullUrl"] = full_url
    return e


def obs_for(ref: str, enc: str | None = None) -> dict[str, Any]:
    o: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "hr"},
        "subject": {"reference": ref},
    }
    if enc:
        o["encounter"] = {"reference": enc}
    return o


def test_transaction_creates_all_and_rewrites_urn_uuid_references(fhir: Fhir) -> None:
    bundle = tx(
        post_entry(obs_for(PAT, ENC)),  # refers forward to entries that come later
        post_entry(patient(family="Tx"), PAT),
        post_entry(
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": PAT},
            },
            ENC,
        ),
        {
            "resource": {
                "resourceType": "Condition",
                "id": "cond-1",
                "subject": {"reference": PAT},
                "evidence": [{"detail": [{"reference": ENC}]}],
            },
            "request": {"method": "PUT", "url": "Condition/cond-1"},
        },
    )
    r = fhir.post("/", bundle)
    assert r.status_code == 200, r.content
    out = r.json()
    assert out["type"] == "transaction-response" and len(out["entry"]) == 4
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created"] * 4
    pid = out["entry"][1]["resource"]["id"]
    eid = out["entry"][2]["resource"]["id"]
    assert out["entry"][1]["response"]["location"] == f"Patient/{pid}/_history/1"
    obs = fhir.get("/" + out["entry"][0]["response"]["location"].rsplit("/_history", 1)[0]).json()
    assert obs["subject"]["reference"] == f"Patient/{pid}"
    assert obs["encounter"]["reference"] == f"Encounter/{eid}"
    cond = fhir.get("/Condition/cond-1").json()
    assert cond["evidence"][0]["detail"][0]["reference"] == f"Encounter/{eid}"
    # The rewritten references are searchable.
    assert fhir.get(f"/Observation?patient={pid}").json()["total"] == 1
    # One transaction = consecutive feed positions.
    seqs = sorted(ResourceVersion.objects.values_list("seq", flat=True))
    assert seqs == list(range(seqs[0], seqs[0] + 4))


def test_failing_entry_rolls_back_the_whole_transaction(fhir: Fhir) -> None:
    existing = fhir.create(patient())["id"]
    before = row_counts()
    bad = tx(
        post_entry(patient(family="WouldBeCreated"), PAT),
        {
            "resource": patient(family="Changed", id=existing),
            "request": {"method": "PUT", "url": f"Patient/{existing}"},
        },
        post_entry(
            {"resourceType": "Observation", "status": "final", "subject": {"reference": PAT}}
        ),  # no code
    )
    r = fhir.post("/", bad)
    assert r.status_code == 422
    issue = outcome_of(r)["issue"][0]
    assert "Bundle.entry[2]" in issue["diagnostics"]
    assert row_counts() == before
    assert fhir.get(f"/Patient/{existing}").json()["name"][0]["family"] == "Doe"


def test_stale_if_match_in_transaction_is_412_and_rolls_back(fhir: Fhir) -> None:
    pid = fhir.create(patient())["id"]
    fhir.put(f"/Patient/{pid}", patient(family="v2", id=pid))
    before = row_counts()
    r = fhir.post(
        "/",
        tx(
            post_entry(patient(family="New")),
            {
                "resource": patient(family="v3", id=pid),
                "request": {"method": "PUT", "url": f"Patient/{pid}", "ifMatch": 'W/"1"'},
            },
        ),
    )
    assert r.status_code == 412
    assert row_counts() == before


def test_unresolved_urn_reference_and_duplicate_targets_are_rejected(fhir: Fhir) -> None:
    before = row_counts()
    r = fhir.post("/", tx(post_entry(obs_for("urn:uuid:99999999-9999-4999-8999-999999999999"))))
    assert r.status_code == 400 and "Unresolved reference" in outcome_of(r)["issue"][0]["diagnostics"]
    twice = {"resource": patient(id="dup"), "request": {"method": "PUT", "url": "Patient/dup"}}
    assert fhir.post("/", tx(twice, twice)).status_code == 400
    assert row_counts() == before


def test_transaction_delete_and_get_entries(fhir: Fhir) -> None:
    victim = fhir.create(patient(family="Victim"))["id"]
    keeper = fhir.create(patient(family="Keeper"))["id"]
    r = fhir.post(
        "/",
        tx(
            {"request": {"method": "GET", "url": f"Patient/{keeper}"}},
            {"request": {"method": "DELETE", "url": f"Patient/{victim}"}},
            {"request": {"method": "GET", "url": "Patient?family=victim"}},
        ),
    )
    assert r.status_code == 200
    entries = r.json()["entry"]
    assert entries[0]["resource"]["id"] == keeper and entries[0]["response"]["status"] == "200 OK"
    assert entries[1]["response"]["status"] == "204 No Content"
    assert entries[2]["resource"]["total"] == 0  # reads run after the writes
    assert fhir.get(f"/Patient/{victim}").status_code == 410


def test_batch_entries_are_independent(fhir: Fhir) -> None:
    r = fhir.post(
        "/",
        tx(
            post_entry(patient(family="Good")),
            post_entry({"resourceType": "Patient", "birthDate": "nope"}),
            {"request": {"method": "GET", "url": "Patient/missing"}},
            {"resource": patient(id="b1"), "request": {"method": "PUT", "url": "Patient/b1"}},
            {"request": {"method": "PATCH", "url": "Patient/b1"}},
            kind="batch",
        ),
    )
    assert r.status_code == 200
    out = r.json()
    assert out["type"] == "batch-response"
    assert [e["response"]["status"] for e in out["entry"]] == [
        "201 Created",
        "422",
        "404",
        "201 Created",
        "405",
    ]
    assert out["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert fhir.get("/Patient?family=good").json()["total"] == 1
    assert fhir.get("/Patient/b1").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Bundle", "type": "collection", "entry": []},
        {"resourceType": "Patient"},
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": {"resourceType": "Patient"}}],
        },
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"request": {"method": "POST", "url": "Nope"}}],
        },
        {"resourceType": "Bundle", "type": "transaction", "entry": "x"},
    ],
)
def test_malformed_bundles_are_4xx_and_write_nothing(fhir: Fhir, body: dict[str, Any]) -> None:
    before = row_counts()
    r = fhir.post("/", body)
    assert 400 <= r.status_code < 500
    outcome_of(r)
    assert row_counts() == before


def test_empty_transaction_is_fine(fhir: Fhir) -> None:
    r = fhir.post("/", tx())
    assert r.status_code == 200 and r.json()["entry"] == []
