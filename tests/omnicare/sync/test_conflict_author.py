"""Issue 18 item 2: a parked conflict says who wrote the server's side and when (never "another user" when the
server knows), on every path the device learns it from: the push answer and GET /api/sync/conflicts."""

from __future__ import annotations

from typing import Any

from omnicare.fhir.models import ResourceVersion
from omnicare.fhir.repository import FhirStore
from omnicare.fhir.services import Write, resources_import
from tests.omnicare.sync.conftest import SyncClient, observation, put


def test_the_conflict_names_the_clinician_whose_version_won_and_when(
    clinic: Any, sync: SyncClient, other_user: Any
) -> None:
    other_user.first_name, other_user.last_name = "Nora", "Baker"
    other_user.save()
    winning = observation("o1", "p1", 75.0)  # someone else's edit lands first (v2), through THE write path
    [w] = FhirStore.system(user=other_user).apply([Write("Observation", "o1", winning)])
    assert w.version is not None and w.version.author == "Nora Baker"

    [r] = sync.push(put(observation("o1", "p1", 68.0), 1))  # this device edited v1
    assert r["status"] == "conflict"
    at = ResourceVersion.objects.get(resource_type="Observation", resource_id="o1", version_id=2).last_updated
    for detail in r["conflicts"]:
        assert detail["oursAuthor"] == "Nora Baker"
        assert detail["oursAt"].startswith(at.strftime("%Y-%m-%dT%H:%M")) and detail["oursAt"].endswith("Z")
    # The stored conflict carries the same (a device that lost the answer adopts it from here).
    [listed] = sync.get("/conflicts", deviceId=sync.device_id).json()
    assert listed["conflicts"] == r["conflicts"]


def test_a_user_without_a_full_name_is_named_by_user_name_and_an_import_by_its_author_reference(
    clinic: Any, sync: SyncClient, other_user: Any
) -> None:
    FhirStore.system(user=other_user).apply([Write("Observation", "o1", observation("o1", "p1", 75.0))])
    [r] = sync.push(put(observation("o1", "p1", 68.0), 1))
    assert {d["oursAuthor"] for d in r["conflicts"]} == {"nurse.test"}

    resources_import(resources=[observation("o3", "p1", 70.0)])
    imported = observation("o3", "p1", 80.0)
    imported["performer"] = [{"reference": "Practitioner/pr-dr-adams", "display": "Dr Alice Adams"}]
    resources_import(resources=[imported])  # v2 by no user (an import)
    [r2] = sync.push(put(observation("o3", "p1", 60.0), 1))
    assert r2["status"] == "conflict"
    assert {d["oursAuthor"] for d in r2["conflicts"]} == {"Dr Alice Adams"}


def test_an_author_reference_without_a_display_is_named_from_the_practitioner(clinic: Any, sync: SyncClient) -> None:
    resources_import(resources=[{"resourceType": "Practitioner", "id": "pr-x",
                                 "name": [{"given": ["Wei"], "family": "Chen"}]}, observation("o4", "p1", 70.0)])
    imported = observation("o4", "p1", 80.0)
    imported["performer"] = [{"reference": "Practitioner/pr-x"}]
    resources_import(resources=[imported])
    [r] = sync.push(put(observation("o4", "p1", 60.0), 1))
    assert {d["oursAuthor"] for d in r["conflicts"]} == {"Wei Chen"}
