"""$export (Bulk Data Access IG v2): kick-off, polling, manifest, files, _type/_since/_outputFormat, cancel,
expiry, errors, scope (a physician gets only their care team), the care-team Group, audit, byte budget."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from omnicare.access.roles import role_assign
from omnicare.audit.models import AuditEvent
from omnicare.bulk.models import BulkJob
from omnicare.bulk.services import care_team_group, job_dir, jobs_expire
from omnicare.fhir.services import resources_import

from .conftest import BASE, client_for, ndjson, wait_manifest

pytestmark = pytest.mark.django_db


def chart(pid: str, n_obs: int = 2) -> list[dict[str, Any]]:
    subj = {"reference": f"Patient/{pid}"}
    return [
        {"resourceType": "Patient", "id": pid, "name": [{"family": f"Fam-{pid}"}]},
        *[{"resourceType": "Observation", "id": f"o-{pid}-{i}", "status": "final", "code": {"text": "hr"},
           "subject": subj, "valueQuantity": {"value": 60 + i, "unit": "/min"}} for i in range(n_obs)],
        {"resourceType": "Immunization", "id": f"imm-{pid}", "status": "completed", "vaccineCode": {"text": "flu"},
         "patient": subj, "occurrenceDateTime": "2024-10-01"},
    ]


@pytest.fixture
def world(django_user_model: Any) -> dict[str, Any]:
    dr = django_user_model.objects.create_user(username="dr.a")
    role_assign(user=dr, role="physician")
    resources_import(resources=[
        *chart("pa"), *chart("pb"), *chart("pc"),
        {"resourceType": "Organization", "id": "org-1", "name": "Clinic"},
        {"resourceType": "Practitioner", "id": "pr-a", "identifier": [{"system": "urn:omnicare:user", "value": "dr.a"}]},
        {"resourceType": "CareTeam", "id": "ct-a", "status": "active", "subject": {"reference": "Patient/pa"},
         "participant": [{"member": {"reference": "Practitioner/pr-a"}}]},
    ])
    return {"dr": dr}


def kick(client: Any, path: str, capture: Any, **params: str) -> Any:
    with capture(execute=True):
        return client.get(f"{BASE}{path}", params, HTTP_PREFER="respond-async")


def exported(client: Any, manifest: dict[str, Any]) -> dict[str, list[str]]:
    return {o["type"]: sorted(r["id"] for r in ndjson(client, o["url"])) for o in manifest["output"]}


def test_system_export_manifest_and_files(integration: Any, world: Any, django_capture_on_commit_callbacks: Any) -> None:
    client = client_for(integration)
    r = kick(client, "/$export", django_capture_on_commit_callbacks)
    assert r.status_code == 202 and "/$bulk-status/" in r["Content-Location"]
    m = wait_manifest(client, r["Content-Location"])
    assert m["requiresAccessToken"] is True and m["transactionTime"] and m["request"].endswith("/$export")
    assert m["error"] == []
    got = exported(client, m)
    assert got["Patient"] == ["pa", "pb", "pc"] and len(got["Observation"]) == 6 and got["Organization"] == ["org-1"]
    assert {o["type"]: o["count"] for o in m["output"]}["Observation"] == 6
    # The file is for the job's owner only (requiresAccessToken), and its download is audited.
    url = m["output"][0]["url"].split("testserver", 1)[1]
    assert client_for(world["dr"]).get(url).status_code == 404
    assert AuditEvent.objects.filter(action="bulk-download", username="interface.engine").exists()
    assert AuditEvent.objects.filter(action="export", resource_type="Patient").first().patient_ids == ["pa", "pb", "pc"]


def test_type_since_and_output_format(integration: Any, world: Any, django_capture_on_commit_callbacks: Any) -> None:
    client = client_for(integration)
    m = wait_manifest(client, kick(client, "/$export", django_capture_on_commit_callbacks,
                                   _type="Immunization,Patient", _outputFormat="ndjson")["Content-Location"])
    assert set(exported(client, m)) == {"Immunization", "Patient"}
    cut = (timezone.now() + timedelta(milliseconds=5)).isoformat()
    import time

    time.sleep(0.02)
    resources_import(resources=[{"resourceType": "Observation", "id": "o-new", "status": "final",
                                 "code": {"text": "bp"}, "subject": {"reference": "Patient/pb"}}])
    m = wait_manifest(client, kick(client, "/$export", django_capture_on_commit_callbacks, _since=cut)["Content-Location"])
    assert exported(client, m) == {"Observation": ["o-new"]}
    for bad in ({"_outputFormat": "text/csv"}, {"_type": "Unicorn"}, {"_since": "yesterday"}, {"_typeFilter": "x"}):
        r = kick(client, "/$export", django_capture_on_commit_callbacks, **bad)
        assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome", bad
    r = client.get(f"{BASE}/$export")  # no Prefer: respond-async
    assert r.status_code == 400


def test_physician_exports_only_their_care_team(world: Any, django_capture_on_commit_callbacks: Any) -> None:
    client = client_for(world["dr"])
    m = wait_manifest(client, kick(client, "/Patient/$export", django_capture_on_commit_callbacks)["Content-Location"])
    got = exported(client, m)
    assert got["Patient"] == ["pa"] and got["Observation"] == ["o-pa-0", "o-pa-1"] and got["Immunization"] == ["imm-pa"]
    assert "Organization" not in got  # patient-level: compartments only
    r = kick(client, "/$export", django_capture_on_commit_callbacks, _type="AuditEvent")
    assert r.status_code == 400


def test_care_team_group_export(integration: Any, world: Any, django_capture_on_commit_callbacks: Any) -> None:
    group = care_team_group(practitioner_id="pr-a")
    assert group["id"] == "care-team-pr-a" and group["quantity"] == 1
    # The clinic's panel grows: the Group is recomputed from the CareTeams at export time.
    resources_import(resources=[{"resourceType": "CareTeam", "id": "ct-c", "status": "active",
                                 "subject": {"reference": "Patient/pc"},
                                 "participant": [{"member": {"reference": "Practitioner/pr-a"}}]}])
    client = client_for(integration)
    m = wait_manifest(client, kick(client, "/Group/care-team-pr-a/$export", django_capture_on_commit_callbacks,
                                   _type="Patient,Observation")["Content-Location"])
    got = exported(client, m)
    assert got == {"Patient": ["pa", "pc"], "Observation": ["o-pa-0", "o-pa-1", "o-pc-0", "o-pc-1"]}
    r = kick(client, "/Group/nope/$export", django_capture_on_commit_callbacks)
    assert r.status_code == 404


def test_cancel_and_expiry_delete_the_files(integration: Any, world: Any, django_capture_on_commit_callbacks: Any) -> None:
    client = client_for(integration)
    url = kick(client, "/$export", django_capture_on_commit_callbacks)["Content-Location"]
    wait_manifest(client, url)
    job = BulkJob.objects.get()
    assert any(job_dir(job).iterdir())
    path = url.split("testserver", 1)[1]
    assert client.delete(path).status_code == 202
    assert client.get(path).status_code == 404 and not job_dir(job).exists()
    assert client.delete(path).status_code == 404
    url = kick(client, "/$export", django_capture_on_commit_callbacks)["Content-Location"]
    m = wait_manifest(client, url)
    job = BulkJob.objects.get(pk=url.rsplit("/", 1)[1])
    assert jobs_expire(now=timezone.now()) == 1  # the cancelled one
    assert jobs_expire(now=timezone.now() + timedelta(days=2)) == 1
    assert not job_dir(job).exists() and client.get(m["output"][0]["url"].split("testserver", 1)[1]).status_code == 404


def test_chunks_are_bounded_by_bytes_not_rows(integration: Any, settings: Any, django_capture_on_commit_callbacks: Any,
                                              monkeypatch: Any) -> None:
    """Memory follows bytes, not resource counts (HAPI's export ran out of memory on large resources): with a
    64 KiB budget, ~40 KiB resources go one per chunk while small ones share chunks."""
    from omnicare.bulk import services

    settings.OMNICARE_BULK_CHUNK_BYTES = 64 * 1024
    big = "x" * 40_000
    resources_import(resources=[{"resourceType": "Basic", "id": f"b{i}", "code": {"text": big}} for i in range(30)]
                     + [{"resourceType": "Basic", "id": f"s{i}", "code": {"text": "small"}} for i in range(300)])
    chunks: list[tuple[int, int]] = []
    real = services._write_chunk

    def spy(f: Any, qs: Any) -> tuple[int, int]:
        got = real(f, qs)
        chunks.append(got)
        return got

    monkeypatch.setattr(services, "_write_chunk", spy)
    client = client_for(integration)
    m = wait_manifest(client, kick(client, "/$export", django_capture_on_commit_callbacks, _type="Basic")["Content-Location"])
    assert m["output"][0]["count"] == 330
    assert max(size for size, _ in chunks) <= 64 * 1024 + 41_000, chunks  # the budget + at most one resource
    assert max(n for _, n in chunks) > 100  # small resources are not fetched one by one
    lines = ndjson(client, m["output"][0]["url"])
    assert json.dumps(lines).count(big) == 30
