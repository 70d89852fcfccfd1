"""A stock FHIR client (fhirpy) against the real server over HTTP: what an integrator would do first."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import MultipleResourcesFound, ResourceNotFound

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fhir(live_asgi: str, user: Any, token_for: Any) -> SyncFHIRClient:
    from omnicare.access.roles import role_assign

    # Front desk: Patient read/search/create/update on every patient (no care-team scope to arrange).
    role_assign(user=user, role="front_desk")
    return SyncFHIRClient(
        f"{live_asgi}/fhir/R4",
        authorization=f"Bearer {token_for(user)}",
        extra_headers={"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"},
    )


def test_create_read_update_with_if_match_and_stale_update_gets_412(
    fhir: SyncFHIRClient, live_asgi: str
) -> None:
    patient = fhir.resource(
        "Patient",
        name=[{"family": "Dvořák", "given": ["Zoë"]}],
        gender="female",
        birthDate="1984-02-29",
        identifier=[{"system": "urn:oid:2.16.840.1.113883.3.9999.1", "value": "MRN-900001"}],
    )
    patient.save()
    assert patient.id
    assert patient["meta"]["versionId"] == "1"

    read = fhir.reference("Patient", patient.id).to_resource()
    assert read["name"][0]["family"] == "Dvořák"
    assert read["birthDate"] == "1984-02-29"

    # Update against the version we read (fhirpy has no If-Match helper; _do_request takes extra headers).
    body = read.serialize()
    body["telecom"] = [{"system": "phone", "value": "+1-555-201-0001"}]
    updated = fhir._do_request("put", f"Patient/{patient.id}", data=body, extra_headers={"If-Match": 'W/"1"'})
    assert updated["meta"]["versionId"] == "2"
    assert fhir.reference("Patient", patient.id).to_resource()["telecom"][0]["value"] == "+1-555-201-0001"

    # A second writer still holding version 1 is refused and changes nothing (fhirpy maps 412 to this error).
    stale = dict(body, gender="other")
    with pytest.raises(MultipleResourcesFound):
        fhir._do_request("put", f"Patient/{patient.id}", data=stale, extra_headers={"If-Match": 'W/"1"'})
    response = requests.put(
        f"{live_asgi}/fhir/R4/Patient/{patient.id}",
        json=stale,
        headers={**fhir._build_request_headers(), "If-Match": 'W/"1"'},
        timeout=10,
    )
    assert response.status_code == 412
    assert response.json()["resourceType"] == "OperationOutcome"
    current = fhir.reference("Patient", patient.id).to_resource()
    assert current["gender"] == "female" and current["meta"]["versionId"] == "2"

    # Plain save() is an unconditional PUT: it becomes version 3.
    current["active"] = False
    current.save()
    assert fhir.reference("Patient", patient.id).to_resource()["meta"]["versionId"] == "3"

    # vread still returns the first version.
    v1 = fhir._do_request("get", f"Patient/{patient.id}/_history/1")
    assert "telecom" not in v1


def test_search_pages_through_all_matches_once_by_following_next_links(
    fhir: SyncFHIRClient, live_asgi: str
) -> None:
    created = set()
    for n in range(45):
        p = fhir.resource(
            "Patient", name=[{"family": "Pagewalker", "given": [f"Test{n:02d}"]}], gender="unknown"
        )
        p.save()
        created.add(p.id)
    fhir.resource("Patient", name=[{"family": "Someone-Else", "given": ["Not"]}]).save()

    # fhirpy follows Bundle.link[next] until there is none.
    seen = [p.id for p in fhir.resources("Patient").search(name="pagewalker").limit(10)]
    assert len(seen) == 45
    assert set(seen) == created

    # The same walk by hand: five pages of at most 10, with a total, ending without a next link.
    headers = fhir._build_request_headers()
    url: str | None = f"{live_asgi}/fhir/R4/Patient?name=pagewalker&_count=10"
    sizes, ids = [], []
    while url:
        bundle = requests.get(url, headers=headers, timeout=10).json()
        assert bundle["type"] == "searchset" and bundle["total"] == 45
        sizes.append(len(bundle.get("entry", [])))
        ids += [e["resource"]["id"] for e in bundle.get("entry", [])]
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    assert sizes == [10, 10, 10, 10, 5]
    assert len(ids) == len(set(ids)) == 45


def test_unknown_resource_and_missing_token(fhir: SyncFHIRClient, live_asgi: str) -> None:
    with pytest.raises(ResourceNotFound):
        fhir.reference("Patient", "does-not-exist").to_resource()
    assert requests.get(f"{live_asgi}/fhir/R4/Patient", timeout=10).status_code == 401
    assert (
        requests.get(f"{live_asgi}/fhir/R4/metadata", timeout=10).json()["resourceType"]
        == "CapabilityStatement"
    )
